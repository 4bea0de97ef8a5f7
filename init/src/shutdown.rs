//! Power off and reboot: which signal asks for what, stopping the daemons,
//! and the final unmount + `reboot(2)`.
//!
//! Order: stop restarting → SIGTERM each daemon → reap until they are all
//! gone or [`GRACE`] has passed → `kill(-1, SIGKILL)` (everything but init)
//! → reap until no children are left (bounded by [`KILL_WAIT`]) → sync →
//! unmount in reverse mount order → remount `/` read-only → sync → reboot.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use nix::sys::reboot::{RebootMode, reboot};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::host::Host;
use crate::mounts::{self, Unmounted};
use crate::supervisor::Supervisor;
use crate::{debug, log};

/// How long daemons get between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(10);
/// How long to keep reaping after SIGKILL (processes in uninterruptible
/// sleep may take a while, or never die).
pub const KILL_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    PowerOff,
    Reboot,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::PowerOff => "power off",
            Action::Reboot => "reboot",
        })
    }
}

/// The signal interface machined uses to ask PID 1 for a shutdown.
/// SIGINT is what the kernel sends for ctrl-alt-del once CAD is disabled.
pub fn action_for_signal(signal: Signal) -> Option<Action> {
    match signal {
        Signal::SIGTERM | Signal::SIGUSR2 => Some(Action::PowerOff),
        Signal::SIGINT | Signal::SIGUSR1 => Some(Action::Reboot),
        _ => None,
    }
}

/// Stop every process but init: daemons first and politely, then the rest.
pub fn stop_all(sup: &mut Supervisor, host: &mut impl Host, grace: Duration, kill_wait: Duration) {
    for (name, pid) in sup.stop() {
        debug!("sending SIGTERM to {name} (pid {pid})");
        if let Err(e) = host.kill(pid, Signal::SIGTERM) {
            log!("SIGTERM to {name} (pid {pid}): {e}");
        }
    }

    let deadline = host.now() + grace;
    loop {
        let reaped = host.reap();
        for (pid, status) in reaped.exits {
            match sup.on_exit(pid, status, host.now()) {
                Some(ev) => log!("{ev}"),
                None => debug!("reaped pid {pid}: {status}"),
            }
        }
        let left = sup.running();
        if left.is_empty() {
            break;
        }
        let now = host.now();
        if now >= deadline {
            let names: Vec<_> = left.iter().map(|(n, _)| *n).collect();
            log!(
                "still running after {}s: {}",
                grace.as_secs(),
                names.join(", ")
            );
            break;
        }
        wait_for_child(host, deadline - now);
    }

    // Everything else: processes the daemons started (containers, their
    // shims) and anything left over. kill(-1) skips init itself.
    if let Err(e) = host.kill(Pid::from_raw(-1), Signal::SIGKILL) {
        debug!("kill(-1, SIGKILL): {e}");
    }
    let deadline = host.now() + kill_wait;
    loop {
        let reaped = host.reap();
        for (pid, status) in reaped.exits {
            if let Some(ev) = sup.on_exit(pid, status, host.now()) {
                log!("{ev}");
            }
        }
        if reaped.no_children {
            break;
        }
        let now = host.now();
        if now >= deadline {
            log!("some processes did not die after SIGKILL; going on");
            break;
        }
        wait_for_child(host, deadline - now);
    }
}

/// Wait for SIGCHLD (or the timeout); other signals are noted and dropped:
/// a shutdown is already under way.
fn wait_for_child(host: &mut impl Host, timeout: Duration) {
    match host.wait_signal(timeout) {
        None | Some(Signal::SIGCHLD) => {}
        Some(s) => debug!("ignoring {} during shutdown", s.as_str()),
    }
}

/// Flush, unmount, and power off or reboot. Never returns.
pub fn finish(action: Action, mountinfo: &Path) -> ! {
    nix::unistd::sync();
    match mounts::unmount_all(mountinfo) {
        Ok(results) => {
            for (target, result) in results {
                match result {
                    Unmounted::Clean => debug!("unmounted {}", target.display()),
                    Unmounted::SkippedBusy => debug!("left {} mounted (busy)", target.display()),
                    Unmounted::Detached(e) => {
                        log!("unmounting {}: {e}; detached it", target.display())
                    }
                    Unmounted::Failed(e) => log!("unmounting {}: {e}", target.display()),
                }
            }
        }
        Err(e) => log!("{}", crate::console::chain(&e)),
    }
    if let Err(e) = mounts::remount_read_only(Path::new("/")) {
        debug!("{}", crate::console::chain(&e));
    }
    halt(action)
}

/// sync and `reboot(2)`, with no unmounting (also used when stage 1 fails).
/// If the kernel refuses, sleep forever: PID 1 must not exit.
pub fn halt(action: Action) -> ! {
    nix::unistd::sync();
    let mode = match action {
        Action::PowerOff => RebootMode::RB_POWER_OFF,
        Action::Reboot => RebootMode::RB_AUTOBOOT,
    };
    log!(
        "{}",
        match action {
            Action::PowerOff => "powering off",
            Action::Reboot => "rebooting",
        }
    );
    // reboot(2) only returns on failure.
    let Err(e) = reboot(mode);
    log!("reboot(2) for {action} failed: {e}; halting here");
    sleep_forever()
}

pub fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemons::DAEMONS;
    use crate::supervisor::BackoffPolicy;
    use crate::testing::{FakeHost, Scripted};

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn signal_mapping() {
        let cases = [
            (Signal::SIGTERM, Some(Action::PowerOff)),
            (Signal::SIGUSR2, Some(Action::PowerOff)),
            (Signal::SIGINT, Some(Action::Reboot)),
            (Signal::SIGUSR1, Some(Action::Reboot)),
            (Signal::SIGHUP, None),
            (Signal::SIGCHLD, None),
            (Signal::SIGPWR, None),
        ];
        for (sig, want) in cases {
            assert_eq!(action_for_signal(sig), want, "{sig}");
        }
    }

    fn started() -> (FakeHost, Supervisor) {
        let mut host = FakeHost::new();
        let mut sup = Supervisor::new(DAEMONS, BackoffPolicy::default(), host.now);
        sup.start_due(&mut host);
        (host, sup)
    }

    #[test]
    fn polite_daemons_get_term_then_everything_gets_kill_at_once() {
        let (mut host, mut sup) = started();
        let orphan = host.add_orphan();
        stop_all(&mut sup, &mut host, GRACE, KILL_WAIT);
        let kills = host.kills();
        let pids: Vec<i32> = ["machined", "networkd", "apid"]
            .iter()
            .map(|n| {
                host.calls
                    .iter()
                    .find_map(|c| match c {
                        crate::testing::Call::Spawn { name, pid, .. } if name == n => {
                            Some(pid.as_raw())
                        }
                        _ => None,
                    })
                    .unwrap()
            })
            .collect();
        assert_eq!(
            kills,
            vec![
                (pids[0], Signal::SIGTERM, Duration::ZERO),
                (pids[1], Signal::SIGTERM, Duration::ZERO),
                (pids[2], Signal::SIGTERM, Duration::ZERO),
                // No waiting out the grace period when all daemons are gone.
                (-1, Signal::SIGKILL, Duration::ZERO),
            ]
        );
        assert_eq!(
            host.alive_count(),
            0,
            "the orphan {orphan} was killed and reaped"
        );
        assert!(sup.running().is_empty());
    }

    #[test]
    fn a_stubborn_daemon_is_killed_after_the_grace_period() {
        let (mut host, mut sup) = started();
        host.ignore_term.insert("machined");
        stop_all(&mut sup, &mut host, GRACE, KILL_WAIT);
        let kills = host.kills();
        assert_eq!(kills.len(), 4);
        assert!(
            kills[..3]
                .iter()
                .all(|k| k.1 == Signal::SIGTERM && k.2 == Duration::ZERO)
        );
        assert_eq!(kills[3], (-1, Signal::SIGKILL, GRACE));
        assert_eq!(host.alive_count(), 0);
    }

    #[test]
    fn a_daemon_that_takes_a_while_is_waited_for() {
        let (mut host, mut sup) = started();
        host.ignore_term.insert("apid");
        host.at(
            secs(3),
            Scripted::Exit("apid", crate::reaper::ExitStatus::Exited(0)),
        );
        stop_all(&mut sup, &mut host, GRACE, KILL_WAIT);
        assert_eq!(host.kills().last(), Some(&(-1, Signal::SIGKILL, secs(3))));
    }

    #[test]
    fn signals_during_shutdown_do_not_restart_anything() {
        let (mut host, mut sup) = started();
        host.ignore_term.insert("apid");
        host.at(secs(1), Scripted::Signal(Signal::SIGTERM));
        host.at(secs(2), Scripted::Signal(Signal::SIGINT));
        stop_all(&mut sup, &mut host, GRACE, KILL_WAIT);
        assert_eq!(host.spawned_names().len(), 3, "no restarts");
        assert_eq!(host.kills().last(), Some(&(-1, Signal::SIGKILL, GRACE)));
    }
}
