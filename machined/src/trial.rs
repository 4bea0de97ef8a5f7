//! A `try` in progress, kept on /run beside the published config: when
//! init restarts machined in the middle of one, machined carries on with
//! the running (trial) config, and this record is what lets it still roll
//! back on time. /run is the boot's tmpfs, so a reboot forgets the record
//! with the trial itself (the boot takes what STATE holds).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use slate_common::fs::write_atomic;
use slate_config::MachineConfig;

use crate::node::Source;

/// What the record holds: when the trial ends, and what to go back to.
pub struct Trial {
    pub deadline: SystemTime,
    /// `None`: back to maintenance mode.
    pub rollback_to: Option<(MachineConfig, Source)>,
}

#[derive(Serialize, Deserialize)]
struct Record {
    deadline_unix_ms: u64,
    rollback_to: Option<Earlier>,
}

#[derive(Serialize, Deserialize)]
struct Earlier {
    source: String,
    /// The config as machined publishes it (JSON).
    config: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TrialError {
    #[error("encoding the config to roll back to")]
    Encode(#[source] slate_config::ConfigError),
    #[error("writing {path}")]
    Write {
        path: String,
        #[source]
        source: slate_common::fs::AtomicWriteError,
    },
}

/// Writes the record (0600: the config in it holds the node's secrets).
pub fn save(path: &Path, trial: &Trial) -> Result<(), TrialError> {
    let rollback_to = match &trial.rollback_to {
        Some((config, source)) => Some(Earlier {
            source: source.as_str().to_owned(),
            config: config.to_json().map_err(TrialError::Encode)?,
        }),
        None => None,
    };
    let deadline_unix_ms = trial
        .deadline
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let record = Record {
        deadline_unix_ms,
        rollback_to,
    };
    // Serialising plain strings and numbers cannot fail.
    let text = serde_json::to_string(&record).unwrap_or_default();
    write_atomic(path, text.as_bytes(), 0o600).map_err(|source| TrialError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// The record, if there is one that reads; one that does not is logged
/// and ignored (the trial config then stays, as it did before records).
pub fn load(path: &Path) -> Option<Trial> {
    let text = std::fs::read_to_string(path).ok()?;
    let parsed = serde_json::from_str::<Record>(&text)
        .map_err(|e| e.to_string())
        .and_then(|r| {
            let rollback_to = match r.rollback_to {
                Some(e) => {
                    let source = Source::parse(&e.source)
                        .ok_or_else(|| format!("unknown source {:?}", e.source))?;
                    let config = MachineConfig::from_json(&e.config, "try record")
                        .map_err(|e| e.to_string())?;
                    Some((config, source))
                }
                None => None,
            };
            Ok(Trial {
                deadline: UNIX_EPOCH + Duration::from_millis(r.deadline_unix_ms),
                rollback_to,
            })
        });
    match parsed {
        Ok(trial) => Some(trial),
        Err(e) => {
            tracing::error!(
                "{}: {e}; the try in progress will not roll back",
                path.display()
            );
            None
        }
    }
}

/// Ends the record: the trial was confirmed or rolled back.
pub fn remove(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("removing {}: {e}", path.display()),
    }
}
