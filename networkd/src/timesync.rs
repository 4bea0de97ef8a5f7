//! Time: an SNTP client (RFC 5905, with `rsntp`) that steps the clock on
//! the first sync, slews it after, and reports whether the node is synced
//! as the `timestatus` resource.
//!
//! Why step then slew: at boot a VM's clock may be seconds or years off,
//! and certificates check validity against it, so the first correction is
//! immediate; afterwards small corrections are slewed (adjtime) so time
//! never jumps backwards under running services. A later offset beyond
//! [`STEP_LIMIT`] is stepped again (a suspended VM).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use slate_config::Time;

/// Offsets below this are not worth a step at the first sync.
const STEP_MIN: f64 = 0.001;
/// Offsets beyond this are stepped even after the first sync.
pub const STEP_LIMIT: f64 = 1.0;
/// How close a confirming sample must be to step after the first sync.
const CONFIRM_WINDOW: f64 = 0.1;
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// Poll intervals: quick until the first sync, then relaxed.
const UNSYNCED_POLL: Duration = Duration::from_secs(5);
const SYNCED_POLL: Duration = Duration::from_secs(64);

/// What a correction does to the clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    Step(f64),
    Slew(f64),
    Nothing,
}

/// The correction for `offset` seconds, knowing whether the clock was
/// ever synced.
pub fn decide(offset: f64, synced_before: bool) -> Action {
    if !offset.is_finite() {
        return Action::Nothing;
    }
    match (synced_before, offset.abs()) {
        (_, a) if a > STEP_LIMIT => Action::Step(offset),
        (false, a) if a >= STEP_MIN => Action::Step(offset),
        (false, _) => Action::Nothing,
        (true, _) => Action::Slew(offset),
    }
}

/// Changes the system clock; tests record instead (the host's clock is
/// not theirs to change).
pub trait Clock: Send {
    fn apply(&mut self, action: Action) -> std::io::Result<()>;
}

/// `CLOCK_REALTIME` through clock_settime (step) and adjtime (slew).
pub struct SystemClock;

impl Clock for SystemClock {
    fn apply(&mut self, action: Action) -> std::io::Result<()> {
        use nix::sys::time::TimeSpec;
        use nix::time::{ClockId, clock_gettime, clock_settime};
        match action {
            Action::Nothing => Ok(()),
            Action::Step(offset) => {
                let now = clock_gettime(ClockId::CLOCK_REALTIME)?;
                let target = now + TimeSpec::from_duration(Duration::from_secs_f64(offset.abs()));
                let target = if offset >= 0.0 {
                    target
                } else {
                    now - TimeSpec::from_duration(Duration::from_secs_f64(-offset))
                };
                clock_settime(ClockId::CLOCK_REALTIME, target)?;
                Ok(())
            }
            Action::Slew(offset) => {
                let micros = (offset * 1e6).round() as i64;
                let delta = libc::timeval {
                    tv_sec: micros.div_euclid(1_000_000),
                    tv_usec: micros.rem_euclid(1_000_000),
                };
                // SAFETY: adjtime reads one timeval and accepts a null
                // pointer for the old delta.
                let rc = unsafe { libc::adjtime(&delta, std::ptr::null_mut()) };
                if rc == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            }
        }
    }
}

/// The `timestatus` resource.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TimeStatus {
    pub synced: bool,
    /// Time sync turned off in the config.
    pub disabled: bool,
    pub server: Option<String>,
    /// The last measured offset, in milliseconds.
    pub offset_ms: Option<f64>,
    pub stratum: Option<u8>,
    /// The last problem, if the last attempt failed.
    pub error: Option<String>,
}

pub type SharedTimeStatus = Arc<Mutex<TimeStatus>>;

/// One sync attempt against `servers`, in order until one answers.
pub async fn sync_once(
    clock: &mut dyn Clock,
    servers: &[String],
    status: &SharedTimeStatus,
) -> bool {
    let client =
        rsntp::AsyncSntpClient::with_config(rsntp::Config::default().timeout(QUERY_TIMEOUT));
    let synced_before = status.lock().unwrap_or_else(|e| e.into_inner()).synced;
    let mut last_error = String::new();
    for server in servers {
        match client.synchronize(server.as_str()).await {
            Ok(result) => {
                let offset = result.clock_offset().as_secs_f64();
                let mut action = decide(offset, synced_before);
                // Once synced, one reply alone may not jump the clock: a
                // second sample must agree (a forged or broken answer
                // would otherwise move time by anything).
                if synced_before && matches!(action, Action::Step(_)) {
                    let again = client.synchronize(server.as_str()).await;
                    let agrees = again.is_ok_and(|r| {
                        (r.clock_offset().as_secs_f64() - offset).abs() < CONFIRM_WINDOW
                    });
                    if !agrees {
                        tracing::warn!(
                            "time: {server} says the clock is {offset:+.3} s off, but a second sample disagrees; not stepping"
                        );
                        action = Action::Nothing;
                    }
                }
                if let Err(e) = clock.apply(action) {
                    last_error = format!("{server}: setting the clock: {e}");
                    continue;
                }
                match action {
                    Action::Step(o) => {
                        tracing::info!("time: stepped the clock by {o:+.3} s ({server})")
                    }
                    Action::Slew(o) => tracing::debug!("time: slewing {o:+.6} s ({server})"),
                    Action::Nothing => {}
                }
                let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
                if !s.synced {
                    tracing::info!("time: synced with {server}");
                }
                *s = TimeStatus {
                    synced: true,
                    disabled: false,
                    server: Some(server.clone()),
                    offset_ms: Some(offset * 1000.0),
                    stratum: Some(result.stratum()),
                    error: None,
                };
                return true;
            }
            Err(e) => last_error = format!("{server}: {e}"),
        }
    }
    // The clock keeps its last correction: still synced if it ever was,
    // with the error for whoever looks.
    let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
    s.error = Some(last_error);
    false
}

/// What time synchronisation works from: the config's `machine.time`,
/// or the defaults (on, no servers) while there is no config.
pub type TimeSettings = Time;

/// The time slice of a published config.
pub fn settings_from_config(config: Option<&slate_config::MachineConfig>) -> TimeSettings {
    config.map(|c| c.machine.time.clone()).unwrap_or_default()
}

/// Keeps the clock synced for ever, as the settings say: a query round at
/// once, again after the poll interval or as soon as the settings change.
pub async fn run(
    mut settings: tokio::sync::watch::Receiver<TimeSettings>,
    status: SharedTimeStatus,
) {
    let mut clock = SystemClock;
    let mut followed = true;
    loop {
        let time = settings.borrow_and_update().clone();
        let synced = if time.disabled {
            let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
            s.disabled = true;
            s.synced = false;
            false
        } else {
            if time.servers.is_empty() {
                // No public pool by default: a node talks only to the time
                // servers its operator named (and, later, DHCP's).
                let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
                s.disabled = false;
                s.error = Some("no time servers: set machine.time.servers".into());
                false
            } else {
                sync_once(&mut clock, &time.servers, &status).await
            }
        };
        let wait = tokio::time::sleep(if synced { SYNCED_POLL } else { UNSYNCED_POLL });
        tokio::select! {
            () = wait => {}
            changed = settings.changed(), if followed => followed = changed.is_ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_first_slew_after_step_again_when_far_off() {
        assert_eq!(decide(42.0, false), Action::Step(42.0));
        assert_eq!(decide(-0.5, false), Action::Step(-0.5));
        assert_eq!(decide(0.0002, false), Action::Nothing);
        assert_eq!(decide(0.2, true), Action::Slew(0.2));
        assert_eq!(decide(-3.0, true), Action::Step(-3.0));
        assert_eq!(decide(f64::NAN, true), Action::Nothing);
    }
}
