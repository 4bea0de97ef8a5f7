//! A recording fake [`Host`] with a fake clock, for unit tests only.
//!
//! Time moves only when the code under test waits: `wait_signal` jumps the
//! clock to the next scripted event or to the end of the timeout.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::daemons::DaemonSpec;
use crate::host::Host;
use crate::reaper::{ExitStatus, Reaped};
use crate::spawn::SpawnError;

/// What the code under test did, with the fake time since start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Spawn {
        name: &'static str,
        pid: Pid,
        at: Duration,
    },
    Kill {
        pid: i32,
        signal: Signal,
        at: Duration,
    },
}

/// Something that happens at a fixed fake time.
#[derive(Clone, Debug)]
pub enum Scripted {
    Signal(Signal),
    /// The named daemon's current process ends.
    Exit(&'static str, ExitStatus),
}

pub struct FakeHost {
    pub t0: Instant,
    pub now: Instant,
    pub calls: Vec<Call>,
    /// (offset from t0, event), in time order.
    pub script: VecDeque<(Duration, Scripted)>,
    pub fail_spawn: HashSet<&'static str>,
    /// Daemons that ignore SIGTERM (only SIGKILL ends them).
    pub ignore_term: HashSet<&'static str>,
    alive: Vec<(Pid, &'static str)>,
    pending: Vec<(Pid, ExitStatus)>,
    next_pid: i32,
    waits: usize,
}

impl FakeHost {
    pub fn new() -> Self {
        let t0 = Instant::now();
        FakeHost {
            t0,
            now: t0,
            calls: Vec::new(),
            script: VecDeque::new(),
            fail_spawn: HashSet::new(),
            ignore_term: HashSet::new(),
            alive: Vec::new(),
            pending: Vec::new(),
            next_pid: 100,
            waits: 0,
        }
    }

    pub fn at(&mut self, offset: Duration, event: Scripted) -> &mut Self {
        self.script.push_back((offset, event));
        self
    }

    /// A child of init that is none of the daemons (reparented orphan).
    pub fn add_orphan(&mut self) -> Pid {
        let pid = Pid::from_raw(self.next_pid);
        self.next_pid += 1;
        self.alive.push((pid, "orphan"));
        pid
    }

    pub fn pid_of(&self, name: &str) -> Option<Pid> {
        self.alive
            .iter()
            .rev()
            .find(|(_, n)| *n == name)
            .map(|(p, _)| *p)
    }

    pub fn alive_count(&self) -> usize {
        self.alive.len()
    }

    pub fn spawned_names(&self) -> Vec<&'static str> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                Call::Spawn { name, .. } => Some(*name),
                _ => None,
            })
            .collect()
    }

    pub fn kills(&self) -> Vec<(i32, Signal, Duration)> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                Call::Kill { pid, signal, at } => Some((*pid, *signal, *at)),
                _ => None,
            })
            .collect()
    }

    fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    fn end(&mut self, pid: Pid, status: ExitStatus) {
        if self.alive.iter().any(|(p, _)| *p == pid) && !self.pending.iter().any(|(p, _)| *p == pid)
        {
            self.pending.push((pid, status));
        }
    }
}

impl Host for FakeHost {
    fn spawn(&mut self, daemon: &DaemonSpec) -> Result<Pid, SpawnError> {
        if self.fail_spawn.contains(daemon.name) {
            return Err(SpawnError::Exec {
                path: daemon.path.to_string(),
                pid: Pid::from_raw(1),
                source: Errno::ENOENT,
            });
        }
        let pid = Pid::from_raw(self.next_pid);
        self.next_pid += 1;
        self.alive.push((pid, daemon.name));
        self.calls.push(Call::Spawn {
            name: daemon.name,
            pid,
            at: self.elapsed(),
        });
        Ok(pid)
    }

    fn kill(&mut self, pid: Pid, signal: Signal) -> Result<(), Errno> {
        self.calls.push(Call::Kill {
            pid: pid.as_raw(),
            signal,
            at: self.elapsed(),
        });
        let kill_status = ExitStatus::Signaled {
            signal,
            core_dumped: false,
        };
        if pid.as_raw() == -1 {
            if signal == Signal::SIGKILL {
                let all: Vec<Pid> = self.alive.iter().map(|(p, _)| *p).collect();
                for p in all {
                    self.end(p, kill_status);
                }
            }
            return Ok(());
        }
        let Some(&(_, name)) = self.alive.iter().find(|(p, _)| *p == pid) else {
            return Err(Errno::ESRCH);
        };
        if signal == Signal::SIGKILL
            || (signal == Signal::SIGTERM && !self.ignore_term.contains(name))
        {
            self.end(pid, kill_status);
        }
        Ok(())
    }

    fn reap(&mut self) -> Reaped {
        let exits: Vec<_> = std::mem::take(&mut self.pending);
        self.alive
            .retain(|(p, _)| !exits.iter().any(|(e, _)| e == p));
        Reaped {
            exits,
            no_children: self.alive.is_empty(),
        }
    }

    fn now(&self) -> Instant {
        self.now
    }

    fn wait_signal(&mut self, timeout: Duration) -> Option<Signal> {
        self.waits += 1;
        assert!(self.waits < 100_000, "the code under test waits forever");
        if !self.pending.is_empty() {
            return Some(Signal::SIGCHLD);
        }
        let deadline = self.now + timeout;
        match self.script.front() {
            Some((offset, _)) if self.t0 + *offset <= deadline => {
                let (offset, event) = self.script.pop_front()?;
                self.now = self.now.max(self.t0 + offset);
                match event {
                    Scripted::Signal(s) => Some(s),
                    Scripted::Exit(name, status) => {
                        if let Some(pid) = self.pid_of(name) {
                            self.end(pid, status);
                        }
                        Some(Signal::SIGCHLD)
                    }
                }
            }
            _ => {
                self.now = deadline;
                None
            }
        }
    }
}
