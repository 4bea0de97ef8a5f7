//! How a test skips. A test that cannot run here (not root, a tool not
//! installed, a kernel without a feature) calls [`skip`] and returns. On a
//! developer's machine that prints `SKIPPED test: why` and the test passes.
//! Under `CI=true` a skip must not pass silently: it fails the test,
//! unless the reason is a [`Reason::Kernel`] feature named in the one
//! allow-list, `tests/skips-allowed.txt`. Every allowed skip is appended to
//! `$SLATE_SKIP_LOG` (when set), which `.ci/run` prints at the end.

use std::io::Write as _;

/// Why a test cannot run here.
#[derive(Debug, Clone, Copy)]
pub enum Reason<'a> {
    /// Needs root, or a capability.
    Privilege(&'a str),
    /// A program (or file) that `make deps` installs is missing.
    Tool(&'a str),
    /// Root or a tool missing, said in the caller's words (never allowed
    /// in CI).
    Setup(&'a str),
    /// The host's kernel lacks a feature: the name must be a line of
    /// `tests/skips-allowed.txt` for CI to accept the skip.
    Kernel(&'a str),
}

/// The kernel features whose absence CI accepts, one per line.
pub const ALLOWED: &str = include_str!("../../tests/skips-allowed.txt");

impl Reason<'_> {
    fn text(&self) -> String {
        match self {
            Self::Privilege(what) => format!("needs {what}"),
            Self::Tool(what) => format!("{what} not installed (make deps)"),
            Self::Setup(what) => (*what).to_owned(),
            Self::Kernel(what) => format!("this kernel has no {what}"),
        }
    }

    fn allowed_in_ci(&self) -> bool {
        match self {
            Self::Kernel(feature) => allowed(ALLOWED, feature),
            Self::Privilege(_) | Self::Tool(_) | Self::Setup(_) => false,
        }
    }
}

fn allowed(list: &str, feature: &str) -> bool {
    list.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .any(|l| l == feature)
}

/// Whether this runs in CI (`CI=true`, as CI systems set it).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Reports that `test` is skipped for `why`. Panics (fails the test) in
/// CI unless the skip is allowed.
pub fn skip(test: &str, why: Reason<'_>) {
    let line = format!("SKIPPED {test}: {}", why.text());
    if in_ci() && !why.allowed_in_ci() {
        panic!(
            "{line}; under CI=true only a missing kernel feature listed in \
             tests/skips-allowed.txt may skip"
        );
    }
    let _ = writeln!(std::io::stderr(), "{line}");
    if let Some(log) = std::env::var_os("SLATE_SKIP_LOG")
        && let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
    {
        let _ = writeln!(file, "{line}");
    }
}

/// `Some(Reason::Privilege("root"))` unless this runs as root.
pub fn unless_root() -> Option<Reason<'static>> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc_geteuid() } == 0;
    (!root).then_some(Reason::Privilege("root"))
}

/// `Some(Reason::Tool(name))` for the first of `tools` not in the usual
/// directories.
pub fn unless_installed<'a>(tools: &[&'a str]) -> Option<Reason<'a>> {
    tools
        .iter()
        .find(|tool| {
            ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
                .iter()
                .all(|d| !std::path::Path::new(d).join(tool).exists())
        })
        .map(|tool| Reason::Tool(tool))
}

unsafe extern "C" {
    // Declared here rather than through the libc crate: this crate has
    // no dependencies, so every test crate can take it cheaply.
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_kernel_features_may_skip_in_ci() {
        let list = "# comment\ndummy and bond links\n\nkernel wireguard\n";
        assert!(allowed(list, "kernel wireguard"));
        assert!(!allowed(list, "comment"));
        assert!(!allowed(list, "wireguard"));
        assert!(!Reason::Tool("dnsmasq").allowed_in_ci());
        assert!(!Reason::Privilege("root").allowed_in_ci());
    }
}
