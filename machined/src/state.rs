//! The STATE volume: the machine config that survives reboots.
//!
//! Files (mode 0600, written atomically: temp file, fsync, rename, fsync
//! of the directory):
//! - `config.yaml`: the config the node boots with;
//! - `config.prev.yaml`: the one `config.yaml` replaced, loaded if
//!   `config.yaml` does not validate (a bug, a bit flip);
//! - `config.staged.yaml`: a config applied with `--mode staged`, which
//!   becomes `config.yaml` at the next boot ([`State::promote_staged`]),
//!   not when machined is merely restarted.
//!
//! A half-written file is never loaded: a write either replaced the file
//! whole or left the old one.

use std::path::{Path, PathBuf};

use slate_common::fs::{AtomicWriteError, copy_atomic, write_atomic};
use slate_config::{MachineConfig, Mode};

const CONFIG: &str = "config.yaml";
const PREVIOUS: &str = "config.prev.yaml";
const STAGED: &str = "config.staged.yaml";

/// A mounted STATE volume.
#[derive(Debug, Clone)]
pub struct State {
    dir: PathBuf,
}

impl State {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether any config was ever kept here (current, previous or
    /// staged): the node belonged to someone, whether or not it loads.
    pub fn holds_config(&self) -> bool {
        [CONFIG, PREVIOUS, STAGED]
            .iter()
            .any(|name| self.dir.join(name).exists())
    }

    /// The stored config, falling back to the previous one when the current
    /// one is unreadable or invalid; `None` when nothing is stored yet.
    pub fn load(&self) -> Option<MachineConfig> {
        for name in [CONFIG, PREVIOUS] {
            let path = self.dir.join(name);
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    tracing::error!("reading {}: {e}", path.display());
                    continue;
                }
            };
            match MachineConfig::parse_bytes(&bytes, &format!("STATE:/{name}"), Mode::Cloud) {
                Ok(config) => {
                    if name == PREVIOUS {
                        tracing::warn!("booting the previous config from STATE");
                    }
                    return Some(config);
                }
                Err(e) => tracing::error!("ignoring the stored config: {e}"),
            }
        }
        None
    }

    /// At boot: a staged config becomes the one to boot with.
    pub fn promote_staged(&self) -> Result<bool, StateError> {
        let staged = self.dir.join(STAGED);
        let Some(config) = self.load_staged() else {
            return Ok(false);
        };
        self.save(&config)?;
        remove_durably(&staged);
        Ok(true)
    }

    /// The staged config, if a valid one is there.
    pub fn load_staged(&self) -> Option<MachineConfig> {
        let bytes = std::fs::read(self.dir.join(STAGED)).ok()?;
        MachineConfig::parse_bytes(&bytes, &format!("STATE:/{STAGED}"), Mode::Cloud)
            .map_err(|e| tracing::error!("ignoring the staged config: {e}"))
            .ok()
    }

    /// Stores `config` for the next boot.
    pub fn save_staged(&self, config: &MachineConfig) -> Result<(), StateError> {
        let yaml = config.to_yaml().map_err(StateError::Serialize)?;
        write_atomic(&self.dir.join(STAGED), yaml.as_bytes(), 0o600)?;
        Ok(())
    }

    /// Drops a staged config (a newer one was applied live).
    pub fn clear_staged(&self) {
        remove_durably(&self.dir.join(STAGED));
    }

    /// Stores `config` as the one to boot with; the current one becomes
    /// the previous.
    pub fn save(&self, config: &MachineConfig) -> Result<(), StateError> {
        let yaml = config.to_yaml().map_err(StateError::Serialize)?;
        let current = self.dir.join(CONFIG);
        if current.exists() {
            copy_atomic(&current, &self.dir.join(PREVIOUS), 0o600)?;
        }
        write_atomic(&current, yaml.as_bytes(), 0o600)?;
        Ok(())
    }
}

/// Unlinks `path` and fsyncs its directory, so a power cut cannot bring
/// the file back (a staged config resurrected would win the next boot).
/// Errors are logged: the file may be gone already.
fn remove_durably(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            tracing::error!("removing {}: {e}", path.display());
            return;
        }
    }
    if let Some(dir) = path.parent()
        && let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all())
    {
        tracing::error!("syncing {}: {e}", dir.display());
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("serializing the config")]
    Serialize(#[source] slate_config::ConfigError),
    #[error("writing to STATE")]
    Write(#[from] AtomicWriteError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(host: &str) -> MachineConfig {
        let mut c = slate_config::generate::generate(&slate_config::generate::Options {
            cluster_name: "t".into(),
            endpoint: "https://10.0.0.1:6443".into(),
            ..Default::default()
        })
        .unwrap()
        .worker;
        c.machine.network.hostname = Some(host.into());
        c
    }

    #[test]
    fn saves_and_falls_back_to_the_last_good_config() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::new(dir.path());
        assert!(state.load().is_none());
        state.save(&config("a")).unwrap();
        state.save(&config("b")).unwrap();
        assert_eq!(
            state.load().unwrap().machine.network.hostname.as_deref(),
            Some("b")
        );
        // A torn or corrupted current file: the previous one boots.
        std::fs::write(dir.path().join(CONFIG), "version: v1alpha1\nmachine: [").unwrap();
        assert_eq!(
            state.load().unwrap().machine.network.hostname.as_deref(),
            Some("a")
        );
    }
}
