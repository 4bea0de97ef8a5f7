//! Stage 2: PID 1 on the real root.
//!
//! Setup (signals, mounts, [`RUN_DIR`]), then the supervision loop until a
//! shutdown signal, then [`shutdown`]. [`run`] never returns.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use slate_common::constants::{
    APID_GID, LATE_MODULE_LIST, LINK_MODULE_LIST, NETWORK_READY_FILE, PROC_CMDLINE, RUN_DIR,
};

use crate::cmdline::Cmdline;
use crate::daemons::DAEMONS;
use crate::host::{Host, RealHost};
use crate::mounts::{self, STAGE2_MOUNTS};
use crate::shutdown::{self, Action, GRACE, KILL_WAIT};
use crate::supervisor::{BackoffPolicy, Supervisor};
use crate::{console, debug, log};

/// Longest single wait when nothing is scheduled; only bounds how stale a
/// timeout computation can get.
pub const IDLE_WAIT: Duration = Duration::from_secs(60);
/// Pause after a panicking loop iteration, so a bug that panics every time
/// does not spin the CPU and flood the console.
pub const PANIC_PAUSE: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct Config {
    pub cmdline: PathBuf,
    pub mountinfo: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cmdline: PROC_CMDLINE.into(),
            mountinfo: "/proc/self/mountinfo".into(),
        }
    }
}

pub fn run(cfg: &Config) -> ! {
    // First, before any child exists: from here on no SIGCHLD (or shutdown
    // request) can be lost, they queue until the loop takes them.
    if let Err(e) = crate::reaper::block_all_signals() {
        log!("blocking signals: {e}");
    }
    console::set_verbose(Cmdline::read(&cfg.cmdline).debug);
    // ctrl-alt-del becomes SIGINT to us (an orderly reboot) instead of an
    // immediate reboot by the kernel.
    if let Err(e) = nix::sys::reboot::set_cad_enabled(false) {
        log!("disabling ctrl-alt-del: {e}");
    }
    // A failed mount here is logged, not fatal: the daemons may still run
    // and report it, which beats a machine that powers off.
    for spec in STAGE2_MOUNTS {
        if let Err(e) = mounts::mount_spec(spec) {
            log!("{}", console::chain(&e));
        }
    }
    if let Err(e) = mounts::ensure_shared_dir(Path::new(RUN_DIR), 0o2755, APID_GID) {
        log!("{}", console::chain(&e));
    }

    load_late_modules(Path::new(LATE_MODULE_LIST), Path::new(LINK_MODULE_LIST));
    log!("stage 2: starting daemons");
    let mut host = RealHost::default();
    let mut sup = Supervisor::new(DAEMONS, BackoffPolicy::default(), host.now());
    let action = supervise(&mut sup, &mut host);

    let stopped = catch_unwind(AssertUnwindSafe(|| {
        shutdown::stop_all(&mut sup, &mut host, GRACE, KILL_WAIT)
    }));
    if stopped.is_err() {
        log!("stopping processes failed (see above); going on with {action}");
    }
    shutdown::finish(action, &cfg.mountinfo)
}

/// Loads the modules of `list` in a child process at the lowest CPU
/// priority, so that they load while the daemons start without delaying
/// them. The child is reaped like any orphan. A missing list (an image
/// without late modules) is not an error.
fn load_late_modules(list: &Path, links: &Path) {
    if !list.exists() {
        return;
    }
    // SAFETY: PID 1 is single-threaded; the child only loads modules,
    // writes console lines and leaves with _exit, never returning here.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            let _ = catch_unwind(|| {
                // SAFETY: plain system call on our own process.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
                match crate::modules::load_list(list) {
                    Ok(s) => log!("late modules: {s}"),
                    Err(e) => log!("{}", console::chain(&e)),
                }
                // The link drivers wait until the node has an address (or
                // 10 s): loading them costs CPU the daemons need on the way
                // to a reachable API, and nothing needs them before.
                if links.exists() {
                    let ready = Path::new(NETWORK_READY_FILE);
                    for _ in 0..100 {
                        if ready.exists() {
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(500));
                    match crate::modules::load_list(links) {
                        Ok(s) => log!("link drivers: {s}"),
                        Err(e) => log!("{}", console::chain(&e)),
                    }
                }
            });
            // SAFETY: ends the child without running the parent's cleanup.
            unsafe { libc::_exit(0) }
        }
        Ok(nix::unistd::ForkResult::Parent { .. }) => {}
        Err(e) => log!("forking the late module loader: {e}; those drivers stay unloaded"),
    }
}

/// The main loop: start what is due, wait for a signal or the next start
/// time, reap, repeat, until a shutdown signal arrives. A panic in one
/// iteration is logged (by the panic hook) and the loop goes on.
pub fn supervise(sup: &mut Supervisor, host: &mut impl Host) -> Action {
    loop {
        match catch_unwind(AssertUnwindSafe(|| step(sup, host))) {
            Ok(Some(action)) => return action,
            Ok(None) => {}
            Err(_) => {
                log!("supervision loop iteration failed; continuing");
                std::thread::sleep(PANIC_PAUSE);
            }
        }
    }
}

/// One iteration; `Some` when it is time to shut down.
fn step(sup: &mut Supervisor, host: &mut impl Host) -> Option<Action> {
    for ev in sup.start_due(host) {
        log!("{ev}");
    }
    let now = host.now();
    let timeout = sup.next_deadline().map_or(IDLE_WAIT, |d| {
        d.saturating_duration_since(now).min(IDLE_WAIT)
    });
    let signal = host.wait_signal(timeout);

    // Reap whatever woke us: SIGCHLDs coalesce, and reaping is cheap.
    let reaped = host.reap();
    for (pid, status) in reaped.exits {
        match sup.on_exit(pid, status, host.now()) {
            Some(ev) => log!("{ev}"),
            None => debug!("reaped pid {pid}: {status}"),
        }
    }

    match signal {
        None | Some(Signal::SIGCHLD) => None,
        Some(s) => match shutdown::action_for_signal(s) {
            Some(action) => {
                log!("{} received: {action}", s.as_str());
                Some(action)
            }
            None => {
                log!("ignoring {}", s.as_str());
                None
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reaper::ExitStatus;
    use crate::testing::{Call, FakeHost, Scripted};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn spawns(host: &FakeHost, who: &str) -> Vec<Duration> {
        host.calls
            .iter()
            .filter_map(|c| match c {
                Call::Spawn { name, at, .. } if *name == who => Some(*at),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn crash_loop_is_restarted_with_growing_delays_until_shutdown() {
        let mut host = FakeHost::new();
        // apid crashes 10 ms after each start, four times.
        host.at(ms(10), Scripted::Exit("apid", ExitStatus::Exited(1)))
            .at(ms(270), Scripted::Exit("apid", ExitStatus::Exited(1)))
            .at(ms(780), Scripted::Exit("apid", ExitStatus::Exited(1)))
            .at(ms(1790), Scripted::Exit("apid", ExitStatus::Exited(1)))
            .at(ms(5000), Scripted::Signal(Signal::SIGUSR1));
        let mut sup = Supervisor::new(DAEMONS, BackoffPolicy::default(), host.now);
        let action = supervise(&mut sup, &mut host);
        assert_eq!(action, Action::Reboot);
        // Started at 0, then 10+250, 270+500, 780+1000, 1790+2000.
        assert_eq!(
            spawns(&host, "apid"),
            [ms(0), ms(260), ms(770), ms(1780), ms(3790)]
        );
        assert_eq!(spawns(&host, "machined"), [ms(0)]);
        assert_eq!(host.now - host.t0, ms(5000));
    }

    #[test]
    fn a_long_healthy_run_resets_the_delay() {
        let mut host = FakeHost::new();
        host.at(ms(10), Scripted::Exit("networkd", ExitStatus::Exited(2)))
            .at(ms(270), Scripted::Exit("networkd", ExitStatus::Exited(2)))
            // Restarted at 270+500 = 770; runs 70 s, so the next delay is
            // the initial 250 ms again.
            .at(
                ms(70_770),
                Scripted::Exit("networkd", ExitStatus::Exited(2)),
            )
            .at(ms(80_000), Scripted::Signal(Signal::SIGTERM));
        let mut sup = Supervisor::new(DAEMONS, BackoffPolicy::default(), host.now);
        assert_eq!(supervise(&mut sup, &mut host), Action::PowerOff);
        assert_eq!(
            spawns(&host, "networkd"),
            [ms(0), ms(260), ms(770), ms(71_020)]
        );
    }

    #[test]
    fn orphans_are_reaped_and_unknown_signals_ignored() {
        let mut host = FakeHost::new();
        let orphan = host.add_orphan();
        host.at(ms(5), Scripted::Exit("orphan", ExitStatus::Exited(0)))
            .at(ms(6), Scripted::Signal(Signal::SIGHUP))
            .at(ms(7), Scripted::Signal(Signal::SIGINT));
        let mut sup = Supervisor::new(DAEMONS, BackoffPolicy::default(), host.now);
        assert_eq!(supervise(&mut sup, &mut host), Action::Reboot);
        assert_eq!(host.pid_of("orphan"), None, "orphan {orphan} reaped");
        assert_eq!(host.spawned_names().len(), 3);
    }

    #[test]
    fn waits_are_bounded_when_nothing_is_due() {
        let mut host = FakeHost::new();
        host.at(Duration::from_secs(600), Scripted::Signal(Signal::SIGTERM));
        let mut sup = Supervisor::new(DAEMONS, BackoffPolicy::default(), host.now);
        assert_eq!(supervise(&mut sup, &mut host), Action::PowerOff);
        assert_eq!(host.spawned_names().len(), 3);
    }
}
