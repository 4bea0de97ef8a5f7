//! Supervision bookkeeping: which daemon runs under which pid, when a dead
//! one is due to start again, and the restart backoff.
//!
//! Plain data; time comes in as arguments (or from [`Host::now`]) and
//! processes start through [`Host::spawn`], so the policy is tested with a
//! fake clock and no processes.

use std::fmt;
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use crate::console::Short;
use crate::daemons::DaemonSpec;
use crate::host::Host;
use crate::reaper::ExitStatus;

/// Capped exponential restart delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// A run at least this long counts as healthy: the delay starts over.
    pub reset_after: Duration,
}

impl Default for BackoffPolicy {
    /// Capped at 5 s (Talos restarts its services every 5 s): these three
    /// daemons are the node's only way in, so every second of delay is a
    /// second the node cannot be managed, while a start of one costs a
    /// fork, an exec and a few milliseconds of CPU even in a crash loop.
    fn default() -> Self {
        BackoffPolicy {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(5),
            reset_after: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    policy: BackoffPolicy,
    next: Duration,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy) -> Self {
        Backoff {
            policy,
            next: policy.initial,
        }
    }

    /// The delay before the next start, after a run of `ran_for`.
    pub fn after_run(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.policy.reset_after {
            self.next = self.policy.initial;
        }
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.policy.max);
        delay
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Start at (or after) this instant.
    Waiting {
        start_at: Instant,
    },
    Running {
        pid: Pid,
        since: Instant,
    },
    /// Shutting down: never started again.
    Stopped,
}

#[derive(Debug)]
struct Daemon {
    spec: DaemonSpec,
    state: State,
    backoff: Backoff,
}

/// Something worth a console line.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Started {
        name: &'static str,
        pid: Pid,
    },
    SpawnFailed {
        name: &'static str,
        error: String,
        retry_in: Duration,
    },
    Exited {
        name: &'static str,
        pid: Pid,
        status: ExitStatus,
        /// `None` when shutting down.
        restart_in: Option<Duration>,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Started { name, pid } => write!(f, "started {name} (pid {pid})"),
            Event::SpawnFailed {
                name,
                error,
                retry_in,
            } => {
                write!(
                    f,
                    "starting {name} failed: {error}; retrying in {}",
                    Short(*retry_in)
                )
            }
            Event::Exited {
                name,
                pid,
                status,
                restart_in: Some(d),
            } => {
                write!(
                    f,
                    "{name} (pid {pid}) {status}; restarting in {}",
                    Short(*d)
                )
            }
            Event::Exited {
                name,
                pid,
                status,
                restart_in: None,
            } => write!(f, "{name} (pid {pid}) {status}"),
        }
    }
}

#[derive(Debug)]
pub struct Supervisor {
    daemons: Vec<Daemon>,
    stopping: bool,
}

impl Supervisor {
    /// All daemons due at `now`, in the order given.
    pub fn new(specs: &[DaemonSpec], policy: BackoffPolicy, now: Instant) -> Self {
        let daemons = specs
            .iter()
            .map(|&spec| Daemon {
                spec,
                state: State::Waiting { start_at: now },
                backoff: Backoff::new(policy),
            })
            .collect();
        Supervisor {
            daemons,
            stopping: false,
        }
    }

    /// Start every daemon whose time has come, in order.
    pub fn start_due(&mut self, host: &mut impl Host) -> Vec<Event> {
        let mut events = Vec::new();
        if self.stopping {
            return events;
        }
        for d in &mut self.daemons {
            let State::Waiting { start_at } = d.state else {
                continue;
            };
            let now = host.now();
            if start_at > now {
                continue;
            }
            match host.spawn(&d.spec) {
                Ok(pid) => {
                    d.state = State::Running { pid, since: now };
                    events.push(Event::Started {
                        name: d.spec.name,
                        pid,
                    });
                }
                Err(e) => {
                    let retry_in = d.backoff.after_run(Duration::ZERO);
                    d.state = State::Waiting {
                        start_at: now + retry_in,
                    };
                    events.push(Event::SpawnFailed {
                        name: d.spec.name,
                        error: crate::console::chain(&e),
                        retry_in,
                    });
                }
            }
        }
        events
    }

    /// A child ended. `None` if it is not one of ours (an orphan).
    pub fn on_exit(&mut self, pid: Pid, status: ExitStatus, now: Instant) -> Option<Event> {
        let stopping = self.stopping;
        let d = self
            .daemons
            .iter_mut()
            .find(|d| matches!(d.state, State::Running { pid: p, .. } if p == pid))?;
        let State::Running { since, .. } = d.state else {
            return None;
        };
        let restart_in = if stopping {
            d.state = State::Stopped;
            None
        } else {
            let delay = d.backoff.after_run(now.saturating_duration_since(since));
            d.state = State::Waiting {
                start_at: now + delay,
            };
            Some(delay)
        };
        Some(Event::Exited {
            name: d.spec.name,
            pid,
            status,
            restart_in,
        })
    }

    /// When [`Supervisor::start_due`] next has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.daemons
            .iter()
            .filter_map(|d| match d.state {
                State::Waiting { start_at } => Some(start_at),
                _ => None,
            })
            .min()
    }

    /// Stop restarting. Returns the daemons still running, to be signalled.
    pub fn stop(&mut self) -> Vec<(&'static str, Pid)> {
        self.stopping = true;
        for d in &mut self.daemons {
            if let State::Waiting { .. } = d.state {
                d.state = State::Stopped;
            }
        }
        self.running()
    }

    pub fn running(&self) -> Vec<(&'static str, Pid)> {
        self.daemons
            .iter()
            .filter_map(|d| match d.state {
                State::Running { pid, .. } => Some((d.spec.name, pid)),
                _ => None,
            })
            .collect()
    }

    pub fn state(&self, name: &str) -> Option<State> {
        self.daemons
            .iter()
            .find(|d| d.spec.name == name)
            .map(|d| d.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemons::DAEMONS;
    use crate::testing::{Call, FakeHost};
    use nix::sys::signal::Signal;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::new(BackoffPolicy::default());
        let got: Vec<u64> = (0..10)
            .map(|_| b.after_run(ms(10)).as_millis() as u64)
            .collect();
        assert_eq!(
            got,
            [250, 500, 1000, 2000, 4000, 5000, 5000, 5000, 5000, 5000]
        );
    }

    #[test]
    fn backoff_resets_after_a_healthy_run() {
        let mut b = Backoff::new(BackoffPolicy::default());
        for _ in 0..4 {
            b.after_run(ms(1));
        }
        assert_eq!(b.after_run(Duration::from_secs(59)), ms(4000));
        assert_eq!(b.after_run(Duration::from_secs(60)), ms(250));
        assert_eq!(b.after_run(ms(1)), ms(500));
    }

    #[test]
    fn starts_all_in_order() {
        let mut host = FakeHost::new();
        let mut sup = Supervisor::new(DAEMONS, BackoffPolicy::default(), host.now);
        let events = sup.start_due(&mut host);
        let names: Vec<_> = host.spawned_names();
        assert_eq!(names, ["machined", "networkd", "apid"]);
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].to_string(), "started machined (pid 100)");
        assert_eq!(sup.next_deadline(), None);
        assert_eq!(sup.running().len(), 3);
    }

    #[test]
    fn restarts_with_backoff_on_the_fake_clock() {
        let mut host = FakeHost::new();
        let t0 = host.now;
        let mut sup = Supervisor::new(DAEMONS, BackoffPolicy::default(), t0);
        sup.start_due(&mut host);
        let apid = host.pid_of("apid").unwrap();

        // Crash right away: restart in 250 ms, not before.
        host.now = t0 + ms(10);
        let ev = sup.on_exit(apid, ExitStatus::Exited(1), host.now).unwrap();
        assert_eq!(
            ev.to_string(),
            format!("apid (pid {apid}) exited with status 1; restarting in 250ms")
        );
        assert_eq!(sup.next_deadline(), Some(t0 + ms(260)));
        host.now = t0 + ms(259);
        assert!(sup.start_due(&mut host).is_empty());
        host.now = t0 + ms(260);
        let ev = sup.start_due(&mut host);
        assert!(matches!(ev[..], [Event::Started { name: "apid", .. }]));
        let apid2 = host.pid_of("apid").unwrap();
        assert_ne!(apid, apid2);

        // Crash again quickly: 500 ms.
        host.now += ms(5);
        let ev = sup.on_exit(
            apid2,
            ExitStatus::Signaled {
                signal: Signal::SIGSEGV,
                core_dumped: false,
            },
            host.now,
        );
        assert!(
            ev.unwrap()
                .to_string()
                .contains("killed by SIGSEGV; restarting in 500ms")
        );

        // Orphans are not ours.
        assert_eq!(
            sup.on_exit(Pid::from_raw(4242), ExitStatus::Exited(0), host.now),
            None
        );
        // Others were untouched.
        assert!(matches!(sup.state("machined"), Some(State::Running { .. })));
    }

    #[test]
    fn a_daemon_that_cannot_start_is_retried_with_backoff() {
        let mut host = FakeHost::new();
        host.fail_spawn.insert("networkd");
        let t0 = host.now;
        let mut sup = Supervisor::new(DAEMONS, BackoffPolicy::default(), t0);
        let ev = sup.start_due(&mut host);
        assert!(
            matches!(&ev[1], Event::SpawnFailed { name: "networkd", retry_in, .. } if *retry_in == ms(250))
        );
        // apid still started after networkd failed.
        assert!(matches!(ev[2], Event::Started { name: "apid", .. }));
        host.now = t0 + ms(250);
        let ev = sup.start_due(&mut host);
        assert!(matches!(&ev[..], [Event::SpawnFailed { retry_in, .. }] if *retry_in == ms(500)));
        host.fail_spawn.clear();
        host.now += ms(500);
        assert!(matches!(
            sup.start_due(&mut host)[..],
            [Event::Started {
                name: "networkd",
                ..
            }]
        ));
    }

    #[test]
    fn stop_prevents_restarts() {
        let mut host = FakeHost::new();
        let mut sup = Supervisor::new(DAEMONS, BackoffPolicy::default(), host.now);
        sup.start_due(&mut host);
        let apid = host.pid_of("apid").unwrap();
        sup.on_exit(apid, ExitStatus::Exited(1), host.now);
        let running = sup.stop();
        assert_eq!(
            running.iter().map(|r| r.0).collect::<Vec<_>>(),
            ["machined", "networkd"]
        );
        assert_eq!(sup.state("apid"), Some(State::Stopped));
        host.now += Duration::from_secs(100);
        assert!(sup.start_due(&mut host).is_empty());
        let machined = host.pid_of("machined").unwrap();
        let ev = sup
            .on_exit(machined, ExitStatus::Exited(0), host.now)
            .unwrap();
        assert_eq!(
            ev.to_string(),
            format!("machined (pid {machined}) exited with status 0")
        );
        assert_eq!(sup.state("machined"), Some(State::Stopped));
        assert_eq!(sup.next_deadline(), None);
        assert!(host.calls.iter().all(|c| !matches!(c, Call::Kill { .. })));
    }
}
