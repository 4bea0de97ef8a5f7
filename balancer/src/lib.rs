//! The Kubernetes API load balancer: `127.0.0.1:<port>` on every node,
//! forwarding TCP to the healthiest, closest control-plane endpoint.
//!
//! # Background
//! kubelet (and anything else on the node) must reach kube-apiserver even
//! when the one address in its kubeconfig is down. Talos's KubePrism does
//! this with health checks every 20 s; a node then keeps dialing a dead API
//! server for up to 20 s. Here a dead endpoint stops getting new
//! connections within one probe interval (500 ms), and at once when a real
//! dial to it fails.
//!
//! # Design
//! - [`endpoints`]: the set, by source (`config` for
//!   `cluster.controlPlane.endpoint`; discovery adds its own with
//!   [`Balancer::set_endpoints`]), each with its health and smoothed
//!   latency, and the order a new connection tries them in.
//! - [`probe`]: one task per endpoint, every [`Settings::probe_interval`]:
//!   `GET /readyz` over TLS on a kept-alive connection (a new TCP connect
//!   only when that fails), else a plain TCP connect.
//! - [`proxy`]: accept, dial the preferred endpoint, on failure the next —
//!   all before reading a byte from the client, so a client never sees a
//!   dead endpoint — then splice bytes both ways. TLS stays end to end
//!   between the client and kube-apiserver.
//! - When no endpoint answers, the client's connection is accepted and
//!   closed at once with a FIN (what it sent is read and dropped first, so
//!   the close is not a reset): its TLS handshake ends and it retries,
//!   rather than waiting for a timeout.
//! - Bounded: at most [`Settings::max_connections`] client connections;
//!   beyond, new ones are accepted and dropped at once (a reset when the
//!   client had sent data: the cheapest refusal under a flood). Each bad
//!   event is logged at most once per source per minute ([`slate_common::ratelimit`]).
//! - [`status`]: the `apibalancer` resource.
//!
//! # Limitations
//! IPv4 and IPv6 endpoints alike, but one address per DNS name at a time
//! (the first that connects). Connections already forwarded stay on their
//! endpoint when it goes down; the client notices as with a direct
//! connection.

pub mod endpoints;
pub mod probe;
pub mod proxy;
pub mod status;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::AbortHandle;

pub use endpoints::{Health, Target, TargetError};
pub use status::{BalancerStatus, EndpointStatus};

use endpoints::Endpoints;
use slate_common::ratelimit::LogLimiter;

/// The timings and limits; [`Settings::default`] is production.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often each endpoint is probed: the bound on how long a dead
    /// endpoint that gets no client dial stays marked healthy.
    pub probe_interval: Duration,
    /// A probe's TCP connect, and separately its TLS handshake and request.
    pub probe_timeout: Duration,
    /// One client dial attempt, and all of them together.
    pub dial_timeout: Duration,
    pub dial_budget: Duration,
    /// Client connections at once. Each holds two sockets and two 8 KiB
    /// buffers, so 4096 is ~70 MiB and 8192 descriptors at worst.
    pub max_connections: usize,
    /// One log line per source per this.
    pub log_every: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_millis(500),
            probe_timeout: Duration::from_secs(1),
            dial_timeout: Duration::from_secs(1),
            dial_budget: Duration::from_secs(3),
            max_connections: 4096,
            log_every: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BalancerError {
    #[error("setting up the probes' TLS")]
    Tls(#[source] slate_pki::tls::TlsError),
    #[error("listening on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The balancer; clones share it. Methods that start tasks must be called
/// inside a tokio runtime.
#[derive(Clone)]
pub struct Balancer {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    settings: Settings,
    state: Mutex<State>,
    changed: tokio::sync::watch::Sender<()>,
    log: Mutex<LogLimiter>,
    permits: Arc<tokio::sync::Semaphore>,
    tls: Arc<rustls::ClientConfig>,
}

#[derive(Default)]
struct State {
    endpoints: Endpoints,
    probes: HashMap<Target, AbortHandle>,
    /// The listener's address and its accept and status tasks.
    listener: Option<(SocketAddr, Vec<AbortHandle>)>,
    enabled: bool,
    error: Option<String>,
    active: usize,
    refused: u64,
    unserved: u64,
    /// Something worth a status update changed that did not notify at
    /// once (latency, counters): published by the status tick.
    dirty: bool,
}

impl Balancer {
    pub fn new(settings: Settings) -> Result<Balancer, BalancerError> {
        let mut tls = slate_pki::tls::client_insecure().map_err(BalancerError::Tls)?;
        // The probe speaks HTTP/1.1: one small GET, no multiplexing needed.
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let permits = Arc::new(tokio::sync::Semaphore::new(settings.max_connections));
        Ok(Balancer {
            shared: Arc::new(Shared {
                log: Mutex::new(LogLimiter::new(settings.log_every)),
                settings,
                state: Mutex::new(State::default()),
                changed: tokio::sync::watch::Sender::new(()),
                permits,
                tls: Arc::new(tls),
            }),
        })
    }

    /// Listens on `addr` (instead of where it listened before) and
    /// forwards what arrives. Returns the bound address (`addr` may have
    /// port 0).
    pub async fn listen(&self, addr: SocketAddr) -> Result<SocketAddr, BalancerError> {
        self.stop_listening();
        let listener = match bind(addr) {
            Ok(l) => l,
            Err(source) => {
                let e = BalancerError::Listen { addr, source };
                let mut s = self.shared.lock();
                s.error = Some(slate_common::error::chain(&e));
                drop(s);
                self.shared.notify();
                return Err(e);
            }
        };
        let local = listener.local_addr().unwrap_or(addr);
        raise_fd_limit(self.shared.settings.max_connections);
        let accept = tokio::spawn(proxy::accept_loop(self.shared.clone(), listener));
        let tick = tokio::spawn(status_tick(self.shared.clone()));
        let mut s = self.shared.lock();
        s.listener = Some((local, vec![accept.abort_handle(), tick.abort_handle()]));
        s.enabled = true;
        s.error = None;
        drop(s);
        tracing::info!("api balancer: listening on {local}");
        self.shared.notify();
        Ok(local)
    }

    /// Closes the listener; connections already forwarded go on.
    pub fn stop_listening(&self) {
        let mut s = self.shared.lock();
        if let Some((addr, tasks)) = s.listener.take() {
            tasks.iter().for_each(AbortHandle::abort);
            tracing::info!("api balancer: stopped listening on {addr}");
        }
        s.enabled = false;
        drop(s);
        self.shared.notify();
    }

    /// Replaces the endpoints `source` contributes (`config`, `mesh`, …);
    /// probes start for new ones and stop for those no source names.
    pub fn set_endpoints(&self, source: &str, targets: Vec<Target>) {
        let mut s = self.shared.lock();
        let (added, removed) = s.endpoints.set(source, targets);
        for t in removed {
            if let Some(probe) = s.probes.remove(&t) {
                probe.abort();
            }
            tracing::info!("api balancer: endpoint {t} removed");
        }
        for t in added {
            tracing::info!("api balancer: endpoint {t} added by {source}");
            let task = tokio::spawn(probe::run(self.shared.clone(), t.clone()));
            s.probes.insert(t, task.abort_handle());
        }
        drop(s);
        self.shared.notify();
    }

    pub fn status(&self) -> BalancerStatus {
        self.shared.status()
    }

    /// Wakes when the status changed: at once for health, endpoints and
    /// the listener; at most once a second for latency and counters.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<()> {
        self.shared.changed.subscribe()
    }

    /// Stops listening and probing; forwarded connections go on.
    pub fn shutdown(&self) {
        self.stop_listening();
        let mut s = self.shared.lock();
        for (_, probe) in s.probes.drain() {
            probe.abort();
        }
        s.endpoints = Endpoints::default();
        drop(s);
        self.shared.notify();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        self.lock().dirty = false;
        self.changed.send_replace(());
    }

    fn status(&self) -> BalancerStatus {
        let s = self.lock();
        let endpoints = status::endpoints(&s.endpoints);
        BalancerStatus {
            enabled: s.enabled,
            listen: s.listener.as_ref().map(|(a, _)| a.to_string()),
            preferred: s.endpoints.preferred().map(|t| t.to_string()),
            healthy: format!(
                "{}/{}",
                endpoints.iter().filter(|e| e.healthy).count(),
                endpoints.len()
            ),
            active_connections: s.active,
            refused_connections: s.refused,
            unserved_connections: s.unserved,
            endpoints,
            error: s.error.clone(),
        }
    }

    /// Takes a probe's verdict; a change of health is published at once.
    fn probed(&self, target: &Target, v: probe::Verdict) {
        let mut s = self.lock();
        let Some(e) = s.endpoints.get_mut(target) else {
            return; // removed while the probe ran
        };
        let before = e.health;
        e.probed(v.health, v.latency, v.error.clone());
        if v.address.is_some() {
            e.address = v.address;
        }
        s.dirty = true;
        drop(s);
        if before != v.health {
            self.health_changed(target, before, v.health, v.error.as_deref());
        }
    }

    /// A client dial to `target` failed: down at once, so the next
    /// connection tries it last.
    fn dial_failed(&self, target: &Target, error: String) {
        let mut s = self.lock();
        let Some(e) = s.endpoints.get_mut(target) else {
            return;
        };
        let before = e.health;
        e.dial_failed(error.clone());
        drop(s);
        if before != Health::Down {
            self.health_changed(target, before, Health::Down, Some(&error));
        } else {
            self.lock().dirty = true;
        }
    }

    fn health_changed(&self, target: &Target, before: Health, now: Health, why: Option<&str>) {
        let why = why.map(|w| format!(": {w}")).unwrap_or_default();
        // An endpoint that flaps must not flood the log either.
        self.warn_limited(&format!("health {target} {now:?}"), || {
            format!("endpoint {target}: {before:?} → {now:?}{why}")
        });
        self.notify();
    }

    /// Logs `message` unless a line about `key` was logged within the
    /// last [`Settings::log_every`].
    fn warn_limited(&self, key: &str, message: impl FnOnce() -> String) {
        let allowed = self
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allow(key, Instant::now());
        match allowed {
            Some(0) => tracing::warn!("api balancer: {}", message()),
            Some(n) => tracing::warn!("api balancer: {} ({n} similar held back)", message()),
            None => {}
        }
    }
}

/// Publishes the changes that do not notify at once, at most once a
/// second, so a watch of a busy balancer is not a stream of counters.
async fn status_tick(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if shared.lock().dirty {
            shared.notify();
        }
    }
}

/// Accept queue: tokio's default (128, as std's) overflows under a burst
/// of connects while the one thread is busy, and each overflow costs a
/// client a 1 s SYN retransmit. The kernel caps it at `somaxconn`.
const BACKLOG: u32 = 1024;

fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // A restarted networkd rebinds while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Each client connection holds two descriptors; the soft limit of 1024
/// that init leaves would cap the balancer near 500 connections.
fn raise_fd_limit(max_connections: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let want = (max_connections as u64) * 2 + 1024;
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft >= want {
        return;
    }
    // Root may raise the hard limit as well (up to fs.nr_open).
    if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, want, hard.max(want)) {
        tracing::warn!("api balancer: raising the descriptor limit to {want}: {e}");
    }
}

/// What the machine config asks of the balancer: its slice of the config
/// feed ([`slate_config::feed::derive`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BalancerSettings {
    pub enabled: bool,
    pub port: u16,
    pub endpoint: Option<Target>,
    /// Why the configured endpoint is not used, if it is not.
    pub endpoint_error: Option<String>,
}

impl BalancerSettings {
    /// `cluster.apiBalancer` and `cluster.controlPlane.endpoint`; off
    /// without a config.
    pub fn from_config(config: Option<&slate_config::MachineConfig>) -> BalancerSettings {
        let Some(config) = config else {
            return BalancerSettings::default();
        };
        let b = &config.cluster.api_balancer;
        let (endpoint, endpoint_error) =
            match Target::from_https_url(&config.cluster.control_plane.endpoint, Some(443)) {
                Ok(t) => (Some(t), None),
                Err(e) => (None, Some(e.to_string())),
            };
        BalancerSettings {
            enabled: b.enabled,
            port: b.port,
            endpoint,
            endpoint_error,
        }
    }
}

/// After a failed bind (the port taken), try again this often.
const LISTEN_RETRY: Duration = Duration::from_secs(5);

/// networkd's balancer: follows its settings for ever — listens, moves
/// to another port, stops, and changes the `config` endpoint as they
/// change. Wakes up for a change, or to retry a port that was taken.
pub async fn run(mut settings: watch::Receiver<BalancerSettings>, balancer: Balancer) {
    let mut applied = BalancerSettings::default();
    let mut listening = false;
    loop {
        let now = settings.borrow_and_update().clone();
        if !now.enabled {
            if applied.enabled {
                // Endpoints of other sources (discovery) stay known.
                balancer.stop_listening();
                balancer.set_endpoints("config", Vec::new());
                listening = false;
            }
        } else {
            if now.endpoint_error != applied.endpoint_error
                && let Some(e) = &now.endpoint_error
            {
                // Once per change.
                tracing::warn!("api balancer: {e}");
            }
            if now.endpoint != applied.endpoint || !applied.enabled {
                balancer.set_endpoints("config", now.endpoint.clone().into_iter().collect());
            }
            let port_changed = applied.enabled && now.port != applied.port;
            if port_changed || !listening {
                let addr = SocketAddr::from(([127, 0, 0, 1], now.port));
                match balancer.listen(addr).await {
                    Ok(_) => listening = true,
                    Err(e) => {
                        listening = false;
                        // A port someone else holds: said once a minute.
                        balancer
                            .shared
                            .warn_limited("listen", || slate_common::error::chain(&e));
                    }
                }
            }
        }
        applied = now;
        let retry = applied.enabled && !listening;
        tokio::select! {
            changed = settings.changed() => if changed.is_err() {
                return;
            },
            _ = tokio::time::sleep(LISTEN_RETRY), if retry => {}
        }
    }
}
