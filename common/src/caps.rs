//! Linux capabilities by name: how `slatectl processes` shows what a
//! process may do, and how init's daemon table says what each daemon
//! keeps. A table rather than the `caps` crate: naming bits is all Slate
//! needs, and init must not allocate between fork and exec.

/// Capability names by bit, as in `linux/capability.h`.
pub const CAPABILITIES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

/// The names of the bits set in `mask` (`CapEff`); `["all"]` when every
/// capability this table knows is set, bits it does not know as `cap_N`.
pub fn names(mask: u64) -> Vec<String> {
    let known = (1u64 << CAPABILITIES.len()) - 1;
    if mask & known == known {
        return vec!["all".into()];
    }
    (0..64)
        .filter(|bit| mask & (1u64 << bit) != 0)
        .map(|bit| match CAPABILITIES.get(bit) {
            Some(name) => (*name).to_owned(),
            None => format!("cap_{bit}"),
        })
        .collect()
}

/// The bit of capability `name` (`"net_admin"` → 12).
pub fn bit(name: &str) -> Option<u32> {
    CAPABILITIES
        .iter()
        .position(|c| *c == name)
        .map(|i| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_named() {
        assert!(names(0).is_empty());
        assert_eq!(names(0x1ff_ffff_ffff), ["all"]);
        assert_eq!(names(u64::MAX), ["all"], "bits a newer kernel adds");
        assert_eq!(
            names((1 << 21) | (1 << 25) | (1 << 50)),
            ["sys_admin", "sys_time", "cap_50"]
        );
    }

    #[test]
    fn names_and_bits_agree() {
        assert_eq!(bit("net_admin"), Some(12));
        assert_eq!(bit("sys_time"), Some(25));
        assert_eq!(bit("no_such"), None);
        for (i, name) in CAPABILITIES.iter().enumerate() {
            assert_eq!(names(1 << bit(name).unwrap()), [*name], "bit {i}");
        }
    }
}
