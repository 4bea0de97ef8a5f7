//! Asking init (PID 1) to reboot or power off. Only root can signal PID 1,
//! and a signal needs no socket or parser in PID 1 (see init's lib.rs for
//! the table: SIGUSR1 reboots, SIGUSR2 powers off).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Reboot,
    PowerOff,
}

/// Who carries out a power action.
#[derive(Debug, Clone)]
pub enum Power {
    /// Signal PID 1: the node.
    Init,
    /// Remember the action: tests, which must not signal the host's init.
    Record(Arc<Mutex<Vec<Action>>>),
}

/// The API answers before the node goes down: a client that asked for a
/// reboot should hear "yes", not a reset connection.
const ANSWER_FIRST: Duration = Duration::from_millis(300);

impl Power {
    /// Carries out `action` shortly, after the caller's answer is sent.
    pub fn request(&self, action: Action) {
        match self {
            Self::Init => {
                tokio::spawn(async move {
                    tokio::time::sleep(ANSWER_FIRST).await;
                    let signal = match action {
                        Action::Reboot => Signal::SIGUSR1,
                        Action::PowerOff => Signal::SIGUSR2,
                    };
                    tracing::info!("asking init to {action:?}");
                    if let Err(e) = kill(Pid::from_raw(1), signal) {
                        tracing::error!("signalling init for {action:?}: {e}");
                    }
                });
            }
            Self::Record(log) => log.lock().unwrap_or_else(|e| e.into_inner()).push(action),
        }
    }
}
