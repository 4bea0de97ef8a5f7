//! The core daemons init runs: what each one is and the order they start in.
//!
//! Its own module so that [`crate::host`] (which spawns a daemon) and
//! [`crate::supervisor`] (which decides when) both depend on it and not on
//! each other.

use slate_common::constants::{APID_BIN, MACHINED_BIN, NETWORKD_BIN};

/// A daemon init starts and restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DaemonSpec {
    pub name: &'static str,
    pub path: &'static str,
    pub args: &'static [&'static str],
}

/// Started in this order: machined first (it owns config and disks),
/// then networkd, then apid (which forwards to both).
pub const DAEMONS: &[DaemonSpec] = &[
    DaemonSpec {
        name: "machined",
        path: MACHINED_BIN,
        args: &[],
    },
    DaemonSpec {
        name: "networkd",
        path: NETWORKD_BIN,
        args: &[],
    },
    DaemonSpec {
        name: "apid",
        path: APID_BIN,
        args: &[],
    },
];
