//! The service supervisor: runs the processes a node exists for
//! (containerd, etcd, kubelet) and keeps them running.
//!
//! Each service ([`spec::ServiceSpec`]) has dependencies (other services up,
//! hand-off files such as `/run/slate/network.ready`), a pre-start step, a
//! process in a cgroup v2 of its own with memory, CPU and process limits
//! ([`cgroup`]), a health check ([`health`]) and a restart policy with
//! capped exponential backoff. One task per service ([`runner`]) moves it
//! through the [`status::State`]s and records each step as an event; its
//! output goes to a bounded log ([`logs`]). Stopping is SIGTERM, a grace
//! period, then SIGKILL of the whole cgroup, so no child outlives it.
//!
//! A service that crash-loops costs only its own backoff: every service
//! has its own task, and nothing a service does (a missing binary, a pre-
//! start error, a hanging health check) reaches the others.

pub mod catalog;
pub mod cgroup;
pub mod cni;
pub mod health;
pub mod kubelet;
pub mod layer;
pub mod logs;
pub mod runner;
pub mod spec;
pub mod status;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

pub use runner::Command;
pub use spec::ServiceSpec;
pub use status::{State, Status};

use logs::LogBuffer;

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("no service {0:?} (services: {1})")]
    Unknown(String, String),
    #[error("service {0:?} exists already")]
    Exists(String),
}

/// One supervised service: its spec, status and log.
pub struct Service {
    pub spec: ServiceSpec,
    status: Mutex<Status>,
    pub logs: LogBuffer,
    changed: Arc<tokio::sync::watch::Sender<()>>,
}

impl Service {
    /// Changes the status and wakes whoever watches the services.
    fn update<R>(&self, f: impl FnOnce(&mut Status) -> R) -> R {
        let r = f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
        self.changed.send_replace(());
        r
    }

    fn record(&self, state: State, message: impl Into<String>) {
        let message = message.into();
        self.update(|s| s.record(state, message));
    }

    /// An event that does not change the state.
    fn note(&self, message: impl Into<String>) {
        let message = message.into();
        self.update(|s| {
            let state = s.state;
            s.record(state, message);
        });
    }

    fn shared_notify(&self) {
        self.changed.send_replace(());
    }

    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A service and the way to its runner.
type Entry = (Arc<Service>, mpsc::Sender<Command>);

/// What the runners share.
pub struct Shared {
    services: Mutex<BTreeMap<String, Entry>>,
    cgroup_root: PathBuf,
    log_dir: Option<PathBuf>,
    changed: Arc<tokio::sync::watch::Sender<()>>,
}

impl Shared {
    fn status(&self, id: &str) -> Option<Status> {
        self.lock().get(id).map(|(s, _)| s.status())
    }

    fn notify(&self) {
        self.changed.send_replace(());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.services.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The handle machined and its API hold.
#[derive(Clone)]
pub struct Supervisor {
    shared: Arc<Shared>,
}

impl Supervisor {
    /// Services get cgroups under `cgroup_root` and, with `log_dir`, log
    /// files there (`ID.log`).
    pub fn new(cgroup_root: PathBuf, log_dir: Option<PathBuf>) -> Self {
        Self {
            shared: Arc::new(Shared {
                services: Mutex::default(),
                cgroup_root,
                log_dir,
                changed: Arc::new(tokio::sync::watch::Sender::new(())),
            }),
        }
    }

    /// Adds a service and starts its task (on the current tokio runtime).
    pub fn add(&self, spec: ServiceSpec) -> Result<(), SupervisorError> {
        let mut services = self.shared.lock();
        if services.contains_key(&spec.id) {
            return Err(SupervisorError::Exists(spec.id));
        }
        let file = self
            .shared
            .log_dir
            .as_ref()
            .map(|d| d.join(format!("{}.log", spec.id)));
        let service = Arc::new(Service {
            status: Mutex::new(Status::new(&spec.id, spec.health.is_some())),
            spec,
            logs: LogBuffer::new(file),
            changed: Arc::clone(&self.shared.changed),
        });
        let (tx, rx) = mpsc::channel(8);
        services.insert(service.spec.id.clone(), (Arc::clone(&service), tx));
        drop(services);
        tokio::spawn(runner::run(Arc::clone(&self.shared), service, rx));
        self.shared.notify();
        Ok(())
    }

    fn get(&self, id: &str) -> Result<Entry, SupervisorError> {
        let services = self.shared.lock();
        services.get(id).cloned().ok_or_else(|| {
            let known: Vec<&str> = services.keys().map(String::as_str).collect();
            let known = if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            };
            SupervisorError::Unknown(id.to_owned(), known)
        })
    }

    pub fn list(&self) -> Vec<Status> {
        self.shared
            .lock()
            .values()
            .map(|(s, _)| s.status())
            .collect()
    }

    pub fn status(&self, id: &str) -> Result<Status, SupervisorError> {
        Ok(self.get(id)?.0.status())
    }

    pub fn logs(&self, id: &str) -> Result<LogBuffer, SupervisorError> {
        Ok(self.get(id)?.0.logs.clone())
    }

    /// Asks the service to start, stop or restart; returns at once (watch
    /// the status for the outcome).
    pub async fn command(&self, id: &str, command: Command) -> Result<(), SupervisorError> {
        let (_, tx) = self.get(id)?;
        // A runner gone (the runtime shutting down) has nothing to do.
        let _ = tx.send(command).await;
        Ok(())
    }

    /// Wakes on every status change of any service.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<()> {
        self.shared.changed.subscribe()
    }

    /// Stops every service (machined's shutdown) and waits up to `wait`
    /// for all of them to be down.
    pub async fn stop_all(&self, wait: Duration) {
        let ids: Vec<String> = self.shared.lock().keys().cloned().collect();
        for id in &ids {
            let _ = self.command(id, Command::Stop).await;
        }
        let mut changes = self.subscribe();
        let down = async {
            loop {
                if self.list().iter().all(|s| s.pid.is_none()) {
                    return;
                }
                let _ = changes.changed().await;
            }
        };
        let _ = tokio::time::timeout(wait, down).await;
    }
}
