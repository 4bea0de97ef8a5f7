//! The system calls a cut-down daemon (networkd, apid) may not make.
//!
//! A deny-list, answered with EPERM, not an allow-list: an allow-list
//! that misses one call a rare path of tokio, rustls or glibc makes kills
//! the node's API on that path, and no test here walks every path. What
//! it takes away is what these daemons never do and what a compromise
//! would reach for first: new namespaces (a user namespace hands back
//! every capability inside it), the kernel's large optional surfaces
//! (bpf, perf, io_uring, userfaultfd, keyrings), other processes' memory,
//! and every privileged call their capabilities already refuse (mounts,
//! modules, kexec, reboot), so that a capability bug alone opens nothing.
//! Setting the clock stays open to a daemon that keeps `sys_time`.
//!
//! Built with `seccompiler` before fork; installed between fork and exec
//! after `no_new_privs`, so the filter holds across exec.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Refused outright.
const DENIED: &[libc::c_long] = &[
    // Namespaces.
    libc::SYS_unshare,
    libc::SYS_setns,
    // Large optional kernel surfaces.
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    // Other processes.
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_kcmp,
    // What the capabilities already refuse.
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_open_tree,
    libc::SYS_move_mount,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_syslog,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_sethostname,
    libc::SYS_setdomainname,
    libc::SYS_vhangup,
];

/// Refused unless the daemon keeps `sys_time` (networkd's NTP client).
const SETS_TIME: &[libc::c_long] = &[
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_adjtimex,
    libc::SYS_clock_adjtime,
];

/// clone(2) flags that make a namespace.
const NEW_NAMESPACES: &[u64] = &[
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWCGROUP as u64,
];

#[derive(Debug, thiserror::Error)]
#[error("building the seccomp filter")]
pub struct FilterError(#[source] seccompiler::BackendError);

/// The filters for a daemon (`sets_time`: it keeps `sys_time`), in the
/// order to install them: the deny-list (EPERM), then clone3 (ENOSYS).
///
/// clone3 takes its flags in a struct a filter cannot read, so it is
/// refused as a kernel without it would: glibc then falls back to
/// clone(2), whose flags the first filter checks (Docker's default
/// profile does the same).
pub fn filters(sets_time: bool) -> Result<[BpfProgram; 2], FilterError> {
    let mut denied: BTreeMap<i64, Vec<SeccompRule>> = DENIED
        .iter()
        .chain(if sets_time { &[][..] } else { SETS_TIME })
        .map(|nr| (*nr, Vec::new()))
        .collect();
    let namespace_flags = NEW_NAMESPACES
        .iter()
        .map(|flag| {
            SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(*flag),
                *flag,
            )
            .and_then(|c| SeccompRule::new(vec![c]))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(FilterError)?;
    denied.insert(libc::SYS_clone, namespace_flags);
    let deny = SeccompFilter::new(
        denied,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        TargetArch::x86_64,
    )
    .map_err(FilterError)?;
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        TargetArch::x86_64,
    )
    .map_err(FilterError)?;
    Ok([
        deny.try_into().map_err(FilterError)?,
        clone3.try_into().map_err(FilterError)?,
    ])
}

/// Installs `program` on the calling thread. Between fork and exec: no
/// allocation, errno on failure.
///
/// # Safety
/// `no_new_privs` must be set (or the caller hold `sys_admin`).
pub unsafe fn install(program: &BpfProgram) -> Result<(), i32> {
    let prog = libc::sock_fprog {
        len: program.len() as libc::c_ushort,
        // seccompiler's sock_filter is the kernel's struct, as libc's is.
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: a valid program pointer for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc < 0 {
        // SAFETY: reads this thread's errno.
        return Err(unsafe { *libc::__errno_location() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_build_with_and_without_the_clock() {
        let [with, clone3] = filters(true).unwrap();
        let [without, _] = filters(false).unwrap();
        assert!(without.len() > with.len(), "the clock calls add rules");
        assert!(!clone3.is_empty());
    }
}
