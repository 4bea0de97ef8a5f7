//! What a service is: how to start it, what it waits for, how it is
//! limited, checked and restarted.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Everything the supervisor needs to run one service.
#[derive(Clone)]
pub struct ServiceSpec {
    /// Short name: `containerd`, `etcd`, `kubelet`; also the cgroup's and
    /// the log file's name.
    pub id: String,
    /// The program and its arguments.
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<PathBuf>,
    /// All must hold before the service starts (state Waiting).
    pub depends: Vec<Condition>,
    /// Runs before every start (state Preparing): writes config files and
    /// returns arguments known only then (kubelet's `--node-ip`), appended
    /// to the command. An error fails this start, which is retried like a
    /// crash.
    pub prepare: Option<Prepare>,
    pub limits: Limits,
    pub health: Option<HealthCheck>,
    pub restart: Restart,
    /// Between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// What a stop or an exit takes down with the main process.
    pub kill_mode: KillMode,
}

/// Who goes when the service stops or its main process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillMode {
    /// Everything in its cgroup: no child outlives the service.
    ControlGroup,
    /// The main process only: for containerd, whose shims (in its cgroup)
    /// keep the containers running across a restart of containerd, as
    /// systemd's containerd.service does with `KillMode=process`.
    Process,
}

/// A pre-start step: extra arguments for this start, or the error that
/// becomes the Failed event's message. It may take long (etcd waits for a
/// bootstrap or a cluster to join) and says what it waits for through
/// [`Progress`]; a stop command cancels it.
pub type Prepare = Arc<dyn Fn(Progress) -> PrepareFuture + Send + Sync>;

pub type PrepareFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<String>, String>> + Send>>;

/// A pre-start step that only writes files: runs at once, never waits.
pub fn prepare_with(
    f: impl Fn() -> Result<Vec<String>, String> + Send + Sync + 'static,
) -> Prepare {
    let f = Arc::new(f);
    Arc::new(move |_| {
        let f = f.clone();
        Box::pin(async move { f() })
    })
}

/// How a pre-start step adds an event to its service's history.
#[derive(Clone)]
pub struct Progress(Arc<dyn Fn(String) + Send + Sync>);

impl Progress {
    pub fn new(f: impl Fn(String) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// Records `message` as an event, keeping the state (Preparing).
    pub fn note(&self, message: impl Into<String>) {
        (self.0)(message.into());
    }
}

impl ServiceSpec {
    /// A service running `command` with the defaults: no dependencies, no
    /// limits, no health check, always restarted (1 s doubling to 30 s),
    /// 5 s grace (machined's whole stop at shutdown gets 8 s), the whole
    /// cgroup killed.
    pub fn new(id: &str, command: &[&str]) -> Self {
        Self::with_command(id, command.iter().map(|s| (*s).to_owned()).collect())
    }

    /// [`ServiceSpec::new`] for a command built at run time.
    pub fn with_command(id: &str, command: Vec<String>) -> Self {
        Self {
            id: id.to_owned(),
            command,
            env: Vec::new(),
            working_dir: None,
            depends: Vec::new(),
            prepare: None,
            limits: Limits::default(),
            health: None,
            restart: Restart::default(),
            grace: Duration::from_secs(5),
            kill_mode: KillMode::ControlGroup,
        }
    }
}

/// `extraArgs` of the machine config (`name: value`) as `--name=value`
/// flags, in the map's (sorted) order.
pub fn flags(
    extra: &std::collections::BTreeMap<String, String>,
) -> impl Iterator<Item = String> + '_ {
    extra.iter().map(|(k, v)| format!("--{k}={v}"))
}

/// What a service waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Another service is Healthy (Running, when it has no health check).
    Service(String),
    /// A file exists: how the daemons hand off (`/run/slate/network.ready`,
    /// `time.synced`, `var.mounted`).
    File(PathBuf),
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Service(id) => write!(f, "service {id}"),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// cgroup v2 limits; `None` leaves the kernel's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// `memory.max` in bytes: beyond it the kernel reclaims, then kills
    /// inside the cgroup only.
    pub memory_max: Option<u64>,
    /// `cpu.max`: CPU time per 100 ms period, in microseconds.
    pub cpu_max_us: Option<u64>,
    /// `pids.max`: processes and threads.
    pub pids_max: Option<u64>,
    /// `/proc/PID/oom_score_adj`, -1000..=1000.
    pub oom_score_adj: Option<i32>,
}

/// How health is checked, every `interval`, each probe within `timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A TCP connect to `host:port` succeeds.
    Tcp(String),
    /// `GET http://host:port/path` answers 2xx (kubelet's `/healthz`).
    Http { addr: String, path: String },
    /// A Unix socket accepts a connection (containerd's).
    Unix(PathBuf),
    /// A command exits 0.
    Exec(Vec<String>),
}

/// When to start again after the process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    pub policy: RestartPolicy,
    /// Delay before the first restart; doubles with each one.
    pub initial: Duration,
    /// The delay stops growing here.
    pub max: Duration,
    /// A process that ran this long resets the delay to `initial`.
    pub reset_after: Duration,
}

impl Default for Restart {
    fn default() -> Self {
        Self {
            policy: RestartPolicy::Always,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}
