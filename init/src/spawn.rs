//! Starting a daemon: fork + exec, done by hand.
//!
//! Not `std::process::Command`: after a failed exec it waits for that child
//! itself, which is a second `waitpid` owner beside [`crate::reaper`] (see
//! there). Here the exec error comes back over a close-on-exec pipe instead,
//! and the failed child is reaped by the reaper like any other.
//!
//! The child gets: its own session (`setsid`, so a signal to a daemon's
//! process group never reaches init or the other daemons), stdin on
//! `/dev/null`, stdout and stderr on the console, an empty signal mask and
//! default SIGPIPE (init blocks everything; Rust's runtime ignores SIGPIPE;
//! both would be inherited across exec), a clean environment, a hard limit
//! of [`NOFILE_HARD`] open files, and its [`Privileges`] (user,
//! capabilities, `no_new_privs`, the [`crate::seccomp`] filters).

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use nix::unistd::{ForkResult, Pid, fork, pipe2};
use thiserror::Error;

use crate::daemons::Privileges;

/// The hard open-file limit of every daemon (the soft one stays 1024, for
/// `select`'s sake): each raises its own soft limit to what its bounds
/// need (apid's connections, the API balancer's), which above the
/// kernel's 4096 default would take `sys_resource`, which they lack.
pub const NOFILE_HARD: libc::rlim_t = 65536;

/// The whole environment of a daemon. RUST_LOG and everything else from
/// the kernel's environment are deliberately absent.
pub const DAEMON_ENV: &[&str] = &["PATH=/usr/bin:/sbin"];

#[derive(Debug, Error)]
pub enum SpawnError {
    #[error("{what} for {path} contains a NUL byte")]
    Nul { what: &'static str, path: String },
    #[error("opening {path} for {daemon}")]
    Open {
        daemon: String,
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("creating the exec-status pipe for {path}")]
    Pipe {
        path: String,
        #[source]
        source: Errno,
    },
    #[error("fork for {path}")]
    Fork {
        path: String,
        #[source]
        source: Errno,
    },
    #[error("unknown capability {cap:?} for {path}")]
    Capability { path: String, cap: String },
    #[error("the seccomp filter for {path}")]
    Seccomp {
        path: String,
        #[source]
        source: crate::seccomp::FilterError,
    },
    #[error("exec {path} (in pid {pid})")]
    Exec {
        path: String,
        pid: Pid,
        #[source]
        source: Errno,
    },
}

/// Where a spawned daemon's standard streams go.
#[derive(Clone, Debug)]
pub struct Stdio {
    pub stdin: PathBuf,
    /// stdout and stderr.
    pub output: PathBuf,
}

impl Default for Stdio {
    fn default() -> Self {
        Stdio {
            stdin: "/dev/null".into(),
            output: "/dev/console".into(),
        }
    }
}

fn cstring(what: &'static str, path: &str, s: &str) -> Result<CString, SpawnError> {
    CString::new(s).map_err(|_| SpawnError::Nul {
        what,
        path: path.to_string(),
    })
}

fn open_stdio(daemon: &str, path: &PathBuf, flags: OFlag) -> Result<OwnedFd, SpawnError> {
    open(
        path,
        flags | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
        Mode::empty(),
    )
    .map_err(|source| SpawnError::Open {
        daemon: daemon.to_string(),
        path: path.clone(),
        source,
    })
}

/// The capabilities `caps` names, as a mask of bits.
fn keep_mask(path: &str, caps: &[&str]) -> Result<u64, SpawnError> {
    let mut mask = 0u64;
    for cap in caps {
        let bit = slate_common::caps::bit(cap).ok_or_else(|| SpawnError::Capability {
            path: path.to_string(),
            cap: (*cap).to_string(),
        })?;
        mask |= 1 << bit;
    }
    Ok(mask)
}

/// Start `path` with `args` (argv[0] is `path`), [`DAEMON_ENV`] and
/// `privileges`. Returns once the child has exec'd (or failed to); never
/// waits for it.
pub fn spawn(
    path: &str,
    args: &[&str],
    stdio: &Stdio,
    privileges: Privileges,
) -> Result<Pid, SpawnError> {
    // Everything the child needs is prepared before fork, so the child only
    // makes async-signal-safe system calls.
    let prog = cstring("path", path, path)?;
    let mut argv = vec![prog.clone()];
    for a in args {
        argv.push(cstring("argument", path, a)?);
    }
    let envp = DAEMON_ENV
        .iter()
        .map(|e| cstring("environment", path, e))
        .collect::<Result<Vec<_>, _>>()?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|c| c.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    // What the child keeps, or (None) everything; whom it runs as, or
    // (None) root.
    let seccomp = |sys_time: bool, allow_list: bool| {
        crate::seccomp::filters(sys_time, allow_list).map_err(|source| SpawnError::Seccomp {
            path: path.to_string(),
            source,
        })
    };
    let confinement = match privileges {
        Privileges::Full => Confinement::default(),
        Privileges::Only(caps) => Confinement {
            keep: Some(keep_mask(path, caps)?),
            user: None,
            filters: Some(seccomp(caps.contains(&"sys_time"), false)?),
        },
        Privileges::User { uid, gid } => Confinement {
            keep: Some(0),
            user: Some((uid, gid)),
            filters: Some(seccomp(false, true)?),
        },
    };

    let stdin = open_stdio(path, &stdio.stdin, OFlag::O_RDONLY)?;
    let output = open_stdio(path, &stdio.output, OFlag::O_WRONLY)?;
    let (status_rd, status_wr) = pipe2(OFlag::O_CLOEXEC).map_err(|source| SpawnError::Pipe {
        path: path.to_string(),
        source,
    })?;

    // SAFETY: init is single-threaded, so the child is a full copy of a
    // consistent process; still, it only calls async-signal-safe functions
    // on data prepared above and ends in execve or _exit.
    match unsafe { fork() } {
        Err(source) => Err(SpawnError::Fork {
            path: path.to_string(),
            source,
        }),
        Ok(ForkResult::Child) => {
            let errno = child_exec(
                prog.as_ptr(),
                argv_ptrs.as_ptr(),
                envp_ptrs.as_ptr(),
                stdin.as_raw_fd(),
                output.as_raw_fd(),
                &confinement,
            );
            let bytes = errno.to_ne_bytes();
            // SAFETY: plain write and _exit on valid fds/buffers.
            unsafe {
                libc::write(status_wr.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
                libc::_exit(127)
            }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(status_wr);
            drop(stdin);
            drop(output);
            // EOF (the pipe closed on exec) means success; four bytes are
            // the errno of a failed exec or setup step.
            let mut buf = [0u8; 4];
            let mut got = 0;
            while got < buf.len() {
                match nix::unistd::read(&status_rd, &mut buf[got..]) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(Errno::EINTR) => continue,
                    Err(_) => break,
                }
            }
            if got == buf.len() {
                let source = Errno::from_raw(i32::from_ne_bytes(buf));
                return Err(SpawnError::Exec {
                    path: path.to_string(),
                    pid: child,
                    source,
                });
            }
            Ok(child)
        }
    }
}

/// A child's [`Privileges`], prepared before fork.
#[derive(Default)]
struct Confinement {
    /// The capabilities kept (a mask), or (None) all of them.
    keep: Option<u64>,
    /// (uid, gid) to run as, or (None) root.
    user: Option<(u32, u32)>,
    filters: Option<Vec<crate::seccomp::Filter>>,
}

/// In the child: set up and exec. Returns the errno of whatever failed.
fn child_exec(
    prog: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    stdin: libc::c_int,
    output: libc::c_int,
    confinement: &Confinement,
) -> i32 {
    // SAFETY: only async-signal-safe calls, on valid pointers prepared by
    // the parent before fork.
    unsafe {
        if libc::setsid() < 0
            || libc::dup2(stdin, 0) < 0
            || libc::dup2(output, 1) < 0
            || libc::dup2(output, 2) < 0
        {
            return *libc::__errno_location();
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) < 0 {
            return *libc::__errno_location();
        }
        // Every standard signal back to its default: an ignored one (as
        // SIGPIPE is in Rust programs, or SIGHUP under nohup) stays
        // ignored across execve otherwise. sigaction, not signal(): only
        // the former is async-signal-safe.
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        for sig in 1..32 {
            // SIGKILL and SIGSTOP refuse, harmlessly.
            libc::sigaction(sig, &default, std::ptr::null_mut());
        }
        let nofile = libc::rlimit {
            rlim_cur: 1024,
            rlim_max: NOFILE_HARD,
        };
        // Best effort: only a host test runs this without the privilege
        // to raise a hard limit; init always has it.
        libc::setrlimit(libc::RLIMIT_NOFILE, &nofile);
        if let Some(keep) = confinement.keep {
            // Ascending, until the first bit this kernel does not know
            // (EINVAL): every capability not kept leaves the bounding set.
            for cap in 0..64u32 {
                if keep & (1 << cap) == 0
                    && libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) < 0
                {
                    let errno = *libc::__errno_location();
                    if errno == libc::EINVAL {
                        break;
                    }
                    return errno;
                }
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                return *libc::__errno_location();
            }
        }
        // Groups first, while setgid is still allowed; real, effective and
        // saved ids alike, so nothing can switch back. Leaving uid 0
        // clears the permitted and effective capabilities.
        if let Some((uid, gid)) = confinement.user
            && (libc::setgroups(0, std::ptr::null()) < 0
                || libc::setresgid(gid, gid, gid) < 0
                || libc::setresuid(uid, uid, uid) < 0)
        {
            return *libc::__errno_location();
        }
        // After no_new_privs, as the kernel requires of a process that
        // is about to lose sys_admin; they hold across exec.
        for program in confinement.filters.iter().flatten() {
            if let Err(errno) = crate::seccomp::install(program) {
                return errno;
            }
        }
        libc::execve(prog, argv, envp);
        *libc::__errno_location()
    }
}
