//! The narrow interface between supervision logic and the kernel.
//!
//! [`crate::supervisor`], [`crate::stage2::supervise`] and
//! [`crate::shutdown::stop_all`] only talk to the system through [`Host`],
//! passed in explicitly. Production passes [`RealHost`]; tests pass a
//! recording fake with a fake clock (no sleeping, no real processes).

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::daemons::DaemonSpec;
use crate::reaper::Reaped;
use crate::spawn::{SpawnError, Stdio};

pub trait Host {
    /// Start a daemon; returns once it has exec'd.
    fn spawn(&mut self, daemon: &DaemonSpec) -> Result<Pid, SpawnError>;
    /// `kill(2)`; pid -1 means every process but init.
    fn kill(&mut self, pid: Pid, signal: Signal) -> Result<(), Errno>;
    /// Collect every ended child without blocking.
    fn reap(&mut self) -> Reaped;
    fn now(&self) -> Instant;
    /// Wait up to `timeout` for a signal; `None` on timeout.
    fn wait_signal(&mut self, timeout: Duration) -> Option<Signal>;
}

/// The real thing. Assumes all signals are blocked
/// ([`crate::reaper::block_all_signals`]).
#[derive(Debug, Default)]
pub struct RealHost {
    pub stdio: Stdio,
}

impl Host for RealHost {
    fn spawn(&mut self, daemon: &DaemonSpec) -> Result<Pid, SpawnError> {
        crate::spawn::spawn(daemon.path, daemon.args, &self.stdio, daemon.privileges)
    }

    fn kill(&mut self, pid: Pid, signal: Signal) -> Result<(), Errno> {
        nix::sys::signal::kill(pid, signal)
    }

    fn reap(&mut self) -> Reaped {
        crate::reaper::reap_all()
    }

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wait_signal(&mut self, timeout: Duration) -> Option<Signal> {
        crate::reaper::wait_signal(timeout)
    }
}
