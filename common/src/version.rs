//! The identity of this build, shown by `slatectl version` for the client
//! and reported by apid for the node.

/// Slate release.
pub const TAG: &str = env!("CARGO_PKG_VERSION");

/// Git commit the build came from (`SLATE_COMMIT` at build time, else
/// `git rev-parse`, else "unknown"), set by build.rs.
pub const COMMIT: &str = env!("SLATE_COMMIT");

/// The release of the running image: `VERSION_ID` of `/etc/os-release`,
/// which `slate-image --version` sets (a bundle built for an upgrade says
/// its own version there), else [`TAG`].
pub fn running_release() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| release_of(&text))
        .unwrap_or_else(|| TAG.to_owned())
}

/// VERSION_ID, when the file is Slate's (`ID=slate`): a host running the
/// daemons in tests has its own.
fn release_of(os_release: &str) -> Option<String> {
    os_release.lines().find(|l| l.trim() == "ID=slate")?;
    os_release.lines().find_map(|line| {
        let value = line.strip_prefix("VERSION_ID=")?.trim().trim_matches('"');
        (!value.is_empty()).then(|| value.to_owned())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_release_is_os_release_s_version_id() {
        assert_eq!(
            super::release_of("NAME=\"Slate\"\nID=slate\nVERSION_ID=0.2.0-rc1\n").as_deref(),
            Some("0.2.0-rc1")
        );
        assert_eq!(
            super::release_of("ID=slate\nVERSION_ID=\"1.0\"").as_deref(),
            Some("1.0")
        );
        assert_eq!(super::release_of("ID=slate\nNAME=x\n"), None);
        // Debian's, on a test host.
        assert_eq!(super::release_of("ID=debian\nVERSION_ID=\"12\""), None);
    }
}
