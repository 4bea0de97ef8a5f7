//! The node's hostname: which one wins, and setting it in the kernel.
//!
//! Order: the machine config's `machine.network.hostname`, the hostname in
//! `ip=`, then the one the DHCP server hands out, then `slate-` and the last three bytes
//! of the link's MAC, so every node has a stable, distinct name from its
//! first boot even without DHCP.

/// Linux's limit (`__NEW_UTS_LEN`).
const MAX_LEN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum HostnameError {
    #[error("setting hostname {name:?}")]
    Set {
        name: String,
        #[source]
        source: nix::Error,
    },
}

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

/// Picks the hostname by the order in the module docs.
pub fn choose(cmdline: Option<&str>, dhcp: Option<&str>, mac: &[u8]) -> String {
    cmdline
        .or(dhcp.filter(|h| is_valid(h)))
        .map(str::to_owned)
        .unwrap_or_else(|| fallback(mac))
}

/// Sets the kernel hostname, remembering the last one set so an unchanged
/// name (every DHCP renewal) costs nothing.
#[derive(Debug, Default)]
pub struct Hostname {
    enabled: bool,
    current: Option<String>,
}

impl Hostname {
    /// `enabled: false` is for tests run with `ip netns exec`, which shares
    /// the host's UTS namespace.
    pub fn new(enabled: bool) -> Self {
        Hostname {
            enabled,
            current: None,
        }
    }

    /// Sets `name`; returns whether it changed.
    pub fn set(&mut self, name: &str) -> Result<bool, HostnameError> {
        if self.current.as_deref() == Some(name) {
            return Ok(false);
        }
        if self.enabled {
            nix::unistd::sethostname(name).map_err(|source| HostnameError::Set {
                name: name.to_owned(),
                source,
            })?;
        }
        self.current = Some(name.to_owned());
        Ok(true)
    }
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
    fn choice_order() {
        let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
        assert_eq!(fallback(&mac), "slate-123456");
        assert_eq!(choose(Some("a"), Some("b"), &mac), "a");
        assert_eq!(choose(None, Some("b"), &mac), "b");
        assert_eq!(choose(None, Some("bad name"), &mac), "slate-123456");
        assert_eq!(choose(None, None, &mac), "slate-123456");
    }

    #[test]
    fn disabled_setter_tracks_changes() {
        let mut h = Hostname::new(false);
        assert!(h.set("a").unwrap());
        assert!(!h.set("a").unwrap());
        assert!(h.set("b").unwrap());
    }
}
