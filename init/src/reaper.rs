//! The one `waitpid(-1)` in the process, and the signal wait.
//!
//! PID 1 inherits every orphan on the system; each must be reaped or it
//! stays a zombie forever. A global `waitpid(-1)` collects any child's
//! status, so nothing else in the process may wait for a specific child: a
//! per-child wait (like `std::process::Child::wait`) would either lose its
//! status to the reaper (ECHILD) or steal one the reaper should log. Hence
//! [`reap_all`] is the only wait in init, and [`crate::spawn`] does not use
//! `std::process::Command`.

use std::fmt;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled { signal: Signal, core_dumped: bool },
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exited with status {code}"),
            ExitStatus::Signaled {
                signal,
                core_dumped: false,
            } => write!(f, "killed by {}", signal.as_str()),
            ExitStatus::Signaled {
                signal,
                core_dumped: true,
            } => {
                write!(f, "killed by {} (core dumped)", signal.as_str())
            }
        }
    }
}

/// What one reaping pass found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reaped {
    pub exits: Vec<(Pid, ExitStatus)>,
    /// waitpid said ECHILD: we have no children left at all.
    pub no_children: bool,
}

/// Reap every child that has ended, without blocking: `waitpid(-1,
/// WNOHANG | __WALL)` until StillAlive or ECHILD. `__WALL` also collects
/// children whose exit signal is not SIGCHLD (clone()d without it).
pub fn reap_all() -> Reaped {
    let mut out = Reaped::default();
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
            Ok(WaitStatus::StillAlive) => return out,
            Ok(WaitStatus::Exited(pid, code)) => out.exits.push((pid, ExitStatus::Exited(code))),
            Ok(WaitStatus::Signaled(pid, signal, core_dumped)) => out.exits.push((
                pid,
                ExitStatus::Signaled {
                    signal,
                    core_dumped,
                },
            )),
            // Stops and continues are not asked for; nothing to do.
            Ok(_) => {}
            Err(Errno::EINTR) => {}
            Err(Errno::ECHILD) => {
                out.no_children = true;
                return out;
            }
            Err(e) => {
                crate::log!("waitpid(-1): {e}");
                return out;
            }
        }
    }
}

/// Block every signal for the whole process (init is single-threaded).
/// Signals then queue until [`wait_signal`] takes them; nothing runs in a
/// handler. Blocked signals also reach PID 1 at all: the kernel drops
/// signals to init that it has no handler for, unless they are blocked.
pub fn block_all_signals() -> Result<(), Errno> {
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::all()), None)
}

/// Wait up to `timeout` for any (blocked) signal. `None` on timeout, on
/// EINTR, or for a signal nix does not name (real-time signals).
pub fn wait_signal(timeout: Duration) -> Option<Signal> {
    let set = SigSet::all();
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `set` and `ts` are valid for the call; a null siginfo pointer
    // is allowed.
    let r = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
    if r < 0 {
        return None;
    }
    Signal::try_from(r).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_like_the_console_lines() {
        assert_eq!(ExitStatus::Exited(1).to_string(), "exited with status 1");
        assert_eq!(
            ExitStatus::Signaled {
                signal: Signal::SIGSEGV,
                core_dumped: false
            }
            .to_string(),
            "killed by SIGSEGV"
        );
        assert_eq!(
            ExitStatus::Signaled {
                signal: Signal::SIGABRT,
                core_dumped: true
            }
            .to_string(),
            "killed by SIGABRT (core dumped)"
        );
    }
}
