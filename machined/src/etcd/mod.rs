//! etcd on control-plane nodes: its certificates, the bootstrap of a new
//! cluster, joining an existing one, and membership calls for the API.
//!
//! How a control-plane node's etcd starts, decided before every start
//! ([`join::prepare`]):
//! - it has data (`/var/lib/etcd/member`, on EPHEMERAL): it starts from it;
//!   a reboot or a power cut is a plain restart;
//! - `slatectl bootstrap` was called here: a new cluster with this node as
//!   its only member;
//! - otherwise it asks an existing member (the host of the cluster's
//!   control-plane endpoint, and every member it learned of) to add it as a
//!   learner, starts with that member list, and is promoted to a voting
//!   member once it has caught up. Until a cluster answers the service
//!   waits in Preparing, saying what it waits for.
//!
//! Certificates are issued from the cluster's etcd CA (`cluster.etcd.ca`)
//! at every start, onto the boot's tmpfs: nothing secret is kept on disk
//! but the CA in the machine config.

mod certs;
pub mod client;
mod join;
pub mod rpc;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use slate_config::{MachineConfig, MachineType};
use slate_pki::CertAndKey;

use crate::services::spec::{Condition, HealthCheck, Probe, ServiceSpec};

pub use client::{EtcdClient, EtcdError, Member};

/// etcd's client port.
pub const CLIENT_PORT: u16 = 2379;
/// etcd's peer port.
pub const PEER_PORT: u16 = 2380;
/// Plain-HTTP `/health` and `/metrics`, on loopback only.
pub const METRICS_ADDR: &str = "127.0.0.1:2381";

/// Where etcd's files are.
#[derive(Debug, Clone)]
pub struct EtcdPaths {
    /// The data directory, on EPHEMERAL (`/var/lib/etcd`).
    pub data: PathBuf,
    /// Certificates and keys for this boot (`/run/slate/etcd`).
    pub pki: PathBuf,
    /// networkd's ready file: the node's addresses.
    pub network_ready: PathBuf,
    /// The kernel's hostname, the member's name.
    pub hostname: PathBuf,
}

impl Default for EtcdPaths {
    fn default() -> Self {
        Self {
            data: "/var/lib/etcd".into(),
            pki: "/run/slate/etcd".into(),
            network_ready: slate_common::constants::NETWORK_READY_FILE.into(),
            hostname: "/proc/sys/kernel/hostname".into(),
        }
    }
}

impl EtcdPaths {
    /// etcd's own marker of a member's data.
    fn member_dir(&self) -> PathBuf {
        self.data.join("member")
    }
}

/// Who this member is, decided at each start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub ip: std::net::IpAddr,
}

impl Identity {
    pub fn peer_url(&self) -> String {
        url(self.ip, PEER_PORT)
    }
    pub fn client_url(&self) -> String {
        url(self.ip, CLIENT_PORT)
    }
}

fn url(ip: std::net::IpAddr, port: u16) -> String {
    format!("https://{}", std::net::SocketAddr::new(ip, port))
}

/// etcd on this node, shared by its service and the API.
pub struct Etcd {
    pub paths: EtcdPaths,
    config: MachineConfig,
    /// `slatectl bootstrap` was accepted during this boot.
    bootstrap: tokio::sync::watch::Sender<bool>,
    /// machined's own client certificate, made once per boot.
    client_identity: Mutex<Option<CertAndKey>>,
    /// A task is promoting this node's learner.
    promoting: AtomicBool,
    /// Client URLs of the members seen last: where to ask when the
    /// control-plane endpoint does not answer.
    known: Mutex<Vec<String>>,
}

impl Etcd {
    /// etcd for `config`, if the node is a control-plane node and the
    /// extension layer has etcd at `program`.
    pub fn for_node(config: &MachineConfig, program: &Path, paths: EtcdPaths) -> Option<Arc<Self>> {
        if config.machine.kind != MachineType::Controlplane || !program.is_file() {
            return None;
        }
        Some(Arc::new(Self {
            paths,
            config: config.clone(),
            bootstrap: tokio::sync::watch::Sender::new(false),
            client_identity: Mutex::new(None),
            promoting: AtomicBool::new(false),
            known: Mutex::new(Vec::new()),
        }))
    }

    /// The etcd service, running `program`.
    pub fn spec(self: &Arc<Self>, program: &Path) -> ServiceSpec {
        let data = self.paths.data.display().to_string();
        let pki = |f: &str| self.paths.pki.join(f).display().to_string();
        let mut args = vec![
            program.display().to_string(),
            format!("--data-dir={data}"),
            format!("--listen-client-urls=https://0.0.0.0:{CLIENT_PORT}"),
            format!("--listen-peer-urls=https://0.0.0.0:{PEER_PORT}"),
            format!("--listen-metrics-urls=http://{METRICS_ADDR}"),
            format!("--cert-file={}", pki(certs::MEMBER_CRT)),
            format!("--key-file={}", pki(certs::MEMBER_KEY)),
            format!("--trusted-ca-file={}", pki(certs::CA_CRT)),
            "--client-cert-auth=true".into(),
            format!("--peer-cert-file={}", pki(certs::MEMBER_CRT)),
            format!("--peer-key-file={}", pki(certs::MEMBER_KEY)),
            format!("--peer-trusted-ca-file={}", pki(certs::CA_CRT)),
            "--peer-client-cert-auth=true".into(),
            // Keeps an hour of history: without it every write (join
            // registrations, later Kubernetes' own until its apiserver
            // compacts) stays until the 2 GiB quota stops all writes.
            "--auto-compaction-mode=periodic".into(),
            "--auto-compaction-retention=1h".into(),
        ];
        args.extend(crate::services::spec::flags(
            &self.config.cluster.etcd.extra_args,
        ));
        let mut spec = ServiceSpec::with_command("etcd", args);
        spec.env = vec![(
            "LD_LIBRARY_PATH".into(),
            crate::services::layer::EXTENSIONS_LIB.into(),
        )];
        spec.depends = vec![Condition::File(self.paths.network_ready.clone())];
        spec.health = Some(HealthCheck {
            probe: Probe::Http {
                addr: METRICS_ADDR.into(),
                path: "/health".into(),
            },
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(3),
        });
        // etcd flushes its WAL on SIGTERM; it needs a moment on slow disks.
        spec.grace = Duration::from_secs(5);
        spec.limits.oom_score_adj = Some(-998);
        let etcd = self.clone();
        spec.prepare = Some(Arc::new(move |progress| {
            let etcd = etcd.clone();
            Box::pin(async move { join::prepare(&etcd, progress).await })
        }));
        spec
    }

    /// This boot's name and address for etcd.
    pub fn identity(&self) -> Result<Identity, String> {
        let name = std::fs::read_to_string(&self.paths.hostname)
            .map_err(|e| format!("reading the hostname: {e}"))?
            .trim()
            .to_owned();
        let ready = std::fs::read_to_string(&self.paths.network_ready).unwrap_or_default();
        let ip =
            crate::node_ip::node_ip(&ready, &self.config.machine.kubelet.node_ip.valid_subnets)
                .ok_or("no node address in machine.kubelet.nodeIP.validSubnets yet")?;
        Ok(Identity { name, ip })
    }

    /// Whether this node's etcd has data of a member: a write-ahead log.
    /// etcd makes `member/snap` and its database before it checks a join,
    /// so a first start that failed leaves those without a WAL; that is
    /// no membership, and [`Etcd::clear_partial`] removes it.
    pub fn has_data(&self) -> bool {
        std::fs::read_dir(self.paths.member_dir().join("wal")).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "wal"))
        })
    }

    /// Removes what a failed first start left (data without a WAL), so the
    /// next start is a clean join or bootstrap.
    fn clear_partial(&self) -> std::io::Result<()> {
        if self.has_data() || !self.paths.data.exists() {
            return Ok(());
        }
        tracing::warn!(
            "etcd: {} holds no write-ahead log (a first start failed); removing it",
            self.paths.data.display()
        );
        std::fs::remove_dir_all(&self.paths.data)
    }

    /// Client URLs to reach the cluster: the control-plane endpoint's host,
    /// then the members seen last; never `own` (this node's).
    fn candidates(&self, own: Option<&str>) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(host) = slate_config::endpoint_host(&self.config.cluster.control_plane.endpoint)
        {
            out.push(match host.parse::<std::net::IpAddr>() {
                Ok(ip) => url(ip, CLIENT_PORT),
                Err(_) => format!("https://{host}:{CLIENT_PORT}"),
            });
        }
        out.extend(self.known.lock().unwrap_or_else(|e| e.into_inner()).clone());
        out.retain(|u| Some(u.as_str()) != own);
        out.dedup();
        out
    }

    fn remember(&self, members: &[Member]) {
        let urls: Vec<String> = members
            .iter()
            .filter(|m| !m.learner)
            .flat_map(|m| m.client_urls.iter().cloned())
            .collect();
        if !urls.is_empty() {
            *self.known.lock().unwrap_or_else(|e| e.into_inner()) = urls;
        }
    }

    /// machined's client to the cluster through `endpoints`.
    pub async fn connect(&self, endpoints: &[String]) -> Result<EtcdClient, EtcdError> {
        let tls = self.client_tls()?;
        EtcdClient::connect(endpoints, &tls).await
    }

    /// A client through this node's own etcd.
    pub async fn connect_local(&self) -> Result<EtcdClient, EtcdError> {
        self.connect(&[format!("https://127.0.0.1:{CLIENT_PORT}")])
            .await
    }

    /// A client through any member this node knows, its own etcd last.
    pub async fn connect_cluster(&self) -> Result<EtcdClient, EtcdError> {
        let mut endpoints = self.candidates(None);
        endpoints.push(format!("https://127.0.0.1:{CLIENT_PORT}"));
        self.connect(&endpoints).await
    }

    fn client_tls(&self) -> Result<client::ClientTls, EtcdError> {
        let ca = certs::etcd_ca(&self.config).map_err(EtcdError::Config)?;
        let mut cached = self
            .client_identity
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let identity = match &*cached {
            Some(identity) => identity.clone(),
            None => {
                let made = certs::authority(&self.config)
                    .map_err(EtcdError::Config)?
                    .issue_etcd_client("slate-machined")
                    .map_err(|e| EtcdError::Config(e.to_string()))?;
                *cached = Some(made.clone());
                made
            }
        };
        Ok(client::ClientTls {
            ca_pem: ca,
            identity,
        })
    }

    /// Asks for a new cluster here; see [`join::bootstrap`].
    pub async fn bootstrap(&self) -> Result<String, BootstrapRefused> {
        join::bootstrap(self).await
    }

    fn bootstrap_requested(&self) -> bool {
        *self.bootstrap.borrow()
    }

    /// Whether a task already promotes this node's learner; claims it if not.
    fn claim_promotion(&self) -> bool {
        !self.promoting.swap(true, Ordering::SeqCst)
    }

    fn release_promotion(&self) {
        self.promoting.store(false, Ordering::SeqCst);
    }

    /// Forgets this node's membership: its data and any pending bootstrap
    /// (after `etcd leave`).
    pub fn forget(&self) -> std::io::Result<()> {
        self.bootstrap.send_replace(false);
        match std::fs::remove_dir_all(&self.paths.data) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Why `slatectl bootstrap` was refused.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapRefused {
    #[error("etcd on this node has data already ({0}): it is bootstrapped or has joined a cluster")]
    HasData(String),
    #[error("bootstrap was already accepted on this node; etcd is starting")]
    Requested,
    #[error(
        "an etcd cluster already answers at {endpoint} (members: {members}); this node joins it by itself, and a second bootstrap would split the cluster"
    )]
    ClusterExists { endpoint: String, members: String },
    #[error("{0}")]
    NotReady(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_of_an_identity() {
        let id = Identity {
            name: "cp-1".into(),
            ip: "10.5.0.2".parse().unwrap(),
        };
        assert_eq!(id.peer_url(), "https://10.5.0.2:2380");
        let v6 = Identity {
            name: "cp-1".into(),
            ip: "fd00::2".parse().unwrap(),
        };
        assert_eq!(v6.client_url(), "https://[fd00::2]:2379");
    }
}
