//! The core daemons init runs: what each one is, what it may do, and the
//! order they start in.
//!
//! Its own module so that [`crate::host`] (which spawns a daemon) and
//! [`crate::supervisor`] (which decides when) both depend on it and not on
//! each other.

use slate_common::constants::{APID_BIN, APID_GID, APID_UID, MACHINED_BIN, NETWORKD_BIN};

/// A daemon init starts and restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DaemonSpec {
    pub name: &'static str,
    pub path: &'static str,
    pub args: &'static [&'static str],
    pub privileges: Privileges,
}

/// What a daemon may do: set by init between fork and exec, so nothing
/// the daemon does (or a compromise of it does) can widen it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Privileges {
    /// Every capability, and setuid binaries work. machined's: it mounts,
    /// partitions, loads images and starts containerd, etcd and kubelet,
    /// whose containers need the full set and (for
    /// `allowPrivilegeEscalation`) no `no_new_privs` inherited from it.
    Full,
    /// Only these capabilities (by [`slate_common::caps`] name): the
    /// bounding set is cut to them, which for a uid-0 process is also what
    /// it holds after exec, and `no_new_privs` is set, so no exec (setuid
    /// or file capabilities) gets any back; and the [`crate::seccomp`]
    /// filters.
    Only(&'static [&'static str]),
    /// Another user than root, with no supplementary groups: no
    /// capabilities at all (the kernel clears them when uid 0 is left,
    /// and the bounding set is emptied first), no root-owned file but the
    /// world's share, `no_new_privs` and the [`crate::seccomp`] filters.
    User { uid: u32, gid: u32 },
}

/// Started in this order: machined first (it owns config and disks),
/// then networkd, then apid (which forwards to both).
pub const DAEMONS: &[DaemonSpec] = &[
    DaemonSpec {
        name: "machined",
        path: MACHINED_BIN,
        args: &[],
        privileges: Privileges::Full,
    },
    DaemonSpec {
        name: "networkd",
        path: NETWORKD_BIN,
        args: &[],
        // Links, addresses, routes, sysctls under net/, WireGuard and its
        // tun device, fwmarks (net_admin); DHCP's sockets bound to a link
        // (net_raw) and to ports 68 and 546 (net_bind_service); NTP
        // (sys_time). The hostname goes through /proc/sys/kernel/hostname,
        // which needs no sys_admin.
        privileges: Privileges::Only(&["net_admin", "net_raw", "net_bind_service", "sys_time"]),
    },
    DaemonSpec {
        name: "apid",
        path: APID_BIN,
        args: &[],
        // Not root, no capability: it serves TLS on an unprivileged port,
        // forwards to the other daemons' sockets and reads machined's view
        // of the config (its group's, see `constants::APID_GID`); /proc's
        // status files, which processes reads, are world-readable. Its
        // certificate is signed by machined: it reads no CA key.
        privileges: Privileges::User {
            uid: APID_UID,
            gid: APID_GID,
        },
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_capability_a_daemon_keeps_is_a_known_name() {
        for d in DAEMONS {
            if let Privileges::Only(caps) = d.privileges {
                for cap in caps {
                    assert!(
                        slate_common::caps::bit(cap).is_some(),
                        "{}: unknown capability {cap:?}",
                        d.name
                    );
                }
            }
        }
    }
}
