//! Host names: what is a valid one, the `slate-` fallback, and setting it
//! in the kernel. Which source wins is [`crate::names`]' business.

/// Linux's limit (`__NEW_UTS_LEN`).
const MAX_LEN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum HostnameError {
    #[error("setting hostname {name:?}")]
    Set {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// The kernel's hostname as a sysctl file.
const PROC_HOSTNAME: &str = "/proc/sys/kernel/hostname";

/// RFC 1123 host name: dot-separated labels of letters, digits and inner
/// hyphens, 63 bytes per label, and short enough for the kernel.
pub fn is_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_LEN
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `slate-` + the last three bytes of `mac` in lower-case hex.
pub fn fallback(mac: &[u8]) -> String {
    let tail = &mac[mac.len().saturating_sub(3)..];
    let hex: String = tail.iter().map(|b| format!("{b:02x}")).collect();
    format!("slate-{hex}")
}

/// Sets the kernel hostname; `enabled: false` (tests run with `ip netns
/// exec`, which share the host's UTS namespace) only pretends.
///
/// Through the sysctl file, not sethostname(2): that takes `sys_admin`,
/// which init does not give networkd, while the file asks only for uid 0.
pub fn set(name: &str, enabled: bool) -> Result<(), HostnameError> {
    if enabled {
        std::fs::write(PROC_HOSTNAME, name).map_err(|source| HostnameError::Set {
            name: name.to_owned(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity() {
        for ok in ["node1", "a", "node-1.example.com", "1abc"] {
            assert!(is_valid(ok), "{ok}");
        }
        let long = "a".repeat(65);
        for bad in ["", "-a", "a-", "a..b", "a_b", "a b", "ä", long.as_str()] {
            assert!(!is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn fallback_from_mac() {
        let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
        assert_eq!(fallback(&mac), "slate-123456");
    }
}
