//! The system calls a cut-down daemon (networkd, apid) may not make.
//!
//! Every cut-down daemon gets a deny-list, answered with EPERM. apid, the
//! daemon the network reaches first and the one running as its own user,
//! also gets an allow-list ([`ALLOWED_FOR_USER`]), whose refusals the
//! kernel logs to dmesg, so a missed call is seen rather than guessed.
//! networkd keeps the deny-list alone: its netlink, DHCP, WireGuard and
//! NTP paths (raw sockets, tun, sysctls, the clock) are many and some rare
//! (a bond failing over, a lease expiring), and a missed call there cuts
//! the node off its network. What the deny-list
//! takes away is what these daemons never do and what a compromise
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

/// Everything apid may call (x86_64): the allow-list of a daemon that runs
/// as its own user (`Privileges::User`). What a current-thread tokio
/// runtime with a blocking pool, hyper, rustls and glibc's static build
/// use, and no more: files are opened, read and written (inotify on
/// machined's view, /proc for `processes`; as uid 60600 it can write only
/// where anyone may, /tmp), sockets are TCP and Unix plus
/// the netlink socket glibc's getifaddrs opens; no fork (clone makes
/// threads only: the deny-list refuses namespace flags), no mount, no
/// chmod, chown, rename or unlink, no kernel surface beyond these.
/// Checked by running apid on a booted node with this filter's action set
/// to log and calling version, processes, get (config, addresses),
/// services, logs, dmesg and config new: the kernel named only execve
/// (its own start), now listed. The QEMU suites run apid under it.
/// A call outside it fails with EPERM and is logged by the kernel
/// (`SECCOMP_FILTER_FLAG_LOG`, an audit line in dmesg naming the
/// syscall), so a path that needs one more shows up in `slatectl dmesg`.
const ALLOWED_FOR_USER: &[libc::c_long] = &[
    // Descriptors.
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_close,
    libc::SYS_lseek,
    libc::SYS_fcntl,
    libc::SYS_ioctl,
    libc::SYS_dup,
    libc::SYS_dup2,
    libc::SYS_dup3,
    libc::SYS_pipe2,
    libc::SYS_eventfd2,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    // Files (read-only use: the kernel's permissions decide the rest).
    libc::SYS_openat,
    libc::SYS_open,
    libc::SYS_stat,
    libc::SYS_fstat,
    libc::SYS_lstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_statfs,
    libc::SYS_fstatfs,
    libc::SYS_getdents64,
    libc::SYS_readlink,
    libc::SYS_readlinkat,
    libc::SYS_access,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_getcwd,
    libc::SYS_inotify_init1,
    libc::SYS_inotify_add_watch,
    libc::SYS_inotify_rm_watch,
    // Sockets.
    libc::SYS_socket,
    libc::SYS_socketpair,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendmmsg,
    libc::SYS_recvmmsg,
    libc::SYS_shutdown,
    // Memory.
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_membarrier,
    // Threads and signals.
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_get_robust_list,
    libc::SYS_set_tid_address,
    libc::SYS_rseq,
    libc::SYS_arch_prctl,
    libc::SYS_prctl,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    // The kernel's own resumption of a sleep or wait a signal stopped.
    libc::SYS_restart_syscall,
    libc::SYS_sigaltstack,
    libc::SYS_tgkill,
    libc::SYS_exit,
    libc::SYS_exit_group,
    // The filter is installed before the daemon's own exec, which must
    // pass it; a later exec gains nothing (no capability, no_new_privs,
    // and the image has no shell).
    libc::SYS_execve,
    // Time, identity, limits.
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_gettimeofday,
    libc::SYS_time,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_getrandom,
    libc::SYS_uname,
    libc::SYS_sysinfo,
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_gettid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getresuid,
    libc::SYS_getresgid,
    libc::SYS_getgroups,
    libc::SYS_prlimit64,
    libc::SYS_getrlimit,
    libc::SYS_setrlimit,
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

/// A compiled filter and whether the kernel logs what it refuses.
pub struct Filter {
    pub program: BpfProgram,
    pub log: bool,
}

/// The filters for a daemon (`sets_time`: it keeps `sys_time`;
/// `allow_list`: it runs as its own user and gets [`ALLOWED_FOR_USER`]
/// too), in the order to install them: the deny-list (EPERM), clone3
/// (ENOSYS), then the allow-list (EPERM, logged). Where two refuse, the
/// one installed last answers, so the allow-list lists clone3 and lets
/// the ENOSYS stand.
///
/// clone3 takes its flags in a struct a filter cannot read, so it is
/// refused as a kernel without it would: glibc then falls back to
/// clone(2), whose flags the first filter checks (Docker's default
/// profile does the same).
pub fn filters(sets_time: bool, allow_list: bool) -> Result<Vec<Filter>, FilterError> {
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
    let mut out = vec![
        Filter {
            program: deny.try_into().map_err(FilterError)?,
            log: false,
        },
        Filter {
            program: clone3.try_into().map_err(FilterError)?,
            log: false,
        },
    ];
    if allow_list {
        let allowed = SeccompFilter::new(
            ALLOWED_FOR_USER
                .iter()
                .map(|nr| (*nr, Vec::new()))
                .collect(),
            OUTSIDE_THE_ALLOW_LIST,
            SeccompAction::Allow,
            TargetArch::x86_64,
        )
        .map_err(FilterError)?;
        out.push(Filter {
            program: allowed.try_into().map_err(FilterError)?,
            log: true,
        });
    }
    Ok(out)
}

/// What a call outside [`ALLOWED_FOR_USER`] gets.
const OUTSIDE_THE_ALLOW_LIST: SeccompAction = SeccompAction::Errno(libc::EPERM as u32);

/// Installs `program` on the calling thread. Between fork and exec: no
/// allocation, errno on failure.
///
/// # Safety
/// `no_new_privs` must be set (or the caller hold `sys_admin`).
pub unsafe fn install(filter: &Filter) -> Result<(), i32> {
    let program = &filter.program;
    let prog = libc::sock_fprog {
        len: program.len() as libc::c_ushort,
        // seccompiler's sock_filter is the kernel's struct, as libc's is.
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    let flags = if filter.log {
        libc::SECCOMP_FILTER_FLAG_LOG
    } else {
        0
    };
    // SAFETY: a valid program pointer for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
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
    fn filters_build_with_and_without_the_clock_and_the_allow_list() {
        let with = filters(true, false).unwrap();
        let without = filters(false, false).unwrap();
        assert_eq!(with.len(), 2);
        assert!(
            without[0].program.len() > with[0].program.len(),
            "the clock calls add rules"
        );
        assert!(!with[1].program.is_empty());
        let user = filters(false, true).unwrap();
        assert_eq!(user.len(), 3);
        assert!(user[2].log && !user[0].log);
    }
}
