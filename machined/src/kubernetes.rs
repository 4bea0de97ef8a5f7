//! The Kubernetes control plane on a control-plane node: machined's side
//! of [`slate_k8s`].
//!
//! - Before every start of kubelet ([`prepare`]): the component secrets
//!   are issued when missing, stale (the node's names changed) or due for
//!   renewal, and the static pod manifests written (unchanged files are
//!   left alone, so kubelet restarts only what changed).
//! - While the node runs ([`run`]): the same check every minute, and the
//!   bootstrap manifests applied through the API once it answers, then
//!   again every ten minutes (server-side apply is idempotent, and this
//!   heals a deleted RBAC binding or token Secret).
//! - On request: the admin kubeconfig ([`admin_kubeconfig`]) and the list
//!   of static pods ([`static_pods`]).

use std::path::Path;
use std::time::Duration;

use slate_config::{MachineConfig, MachineType};
use slate_k8s::layout::Layout;
use slate_k8s::pki::{self, NodeNames};
use slate_k8s::static_pods;
use slate_proto::machine::StaticPod;

use crate::node_ip::node_ip;

/// How often the certificates' names and expiry are checked.
const CHECK_EVERY: Duration = Duration::from_secs(60);
/// How often the bootstrap manifests are applied again once they were.
const REAPPLY_EVERY: Duration = Duration::from_secs(600);
/// How soon a failed apply is retried (the API is coming up).
const RETRY_APPLY: Duration = Duration::from_secs(10);
/// How often the loop looks for newly joined workers.
const TICK: Duration = Duration::from_secs(5);

/// Whether this node runs the control plane.
pub fn runs_control_plane(config: &MachineConfig) -> bool {
    config.machine.kind == MachineType::Controlplane
}

/// The node's names as the API server's certificate carries them: the
/// ones apid's certificate has (host name, addresses).
fn node_names() -> NodeNames {
    NodeNames {
        hostname: slate_common::host::hostname(),
        addresses: slate_common::host::addresses(),
    }
}

/// Issues what is missing or stale and writes the static pods. Returns
/// whether the secrets were issued anew.
pub fn prepare(
    config: &MachineConfig,
    layout: &Layout,
    network_ready: &Path,
) -> Result<bool, String> {
    let ready = std::fs::read_to_string(network_ready).unwrap_or_default();
    let advertise = node_ip(&ready, &config.machine.kubelet.node_ip.valid_subnets)
        .ok_or("no node address in the valid subnets yet")?;
    let node = node_names();
    let names = pki::api_server_names(config, &node).map_err(|e| e.to_string())?;
    let now = time::OffsetDateTime::now_utc();
    let reissue = !pki::up_to_date(layout, &names, now);
    if reissue {
        let issued = pki::issue_all(config, &node).map_err(|e| e.to_string())?;
        pki::write(layout, &issued).map_err(|e| slate_common::error::chain(&e))?;
        tracing::info!(
            "issued the Kubernetes control plane's certificates for {}",
            names.join(", ")
        );
    }
    let hash = |c: &str| static_pods::directory_hash(&layout.component(c));
    let pods = static_pods::pods(config, advertise, layout, &hash).map_err(|e| e.to_string())?;
    static_pods::write(layout, &pods).map_err(|e| slate_common::error::chain(&e))?;
    Ok(reissue)
}

/// Keeps the control plane's secrets fresh and applies the bootstrap
/// manifests, with a bootstrap-token Secret for each joined worker's
/// machine token (`registry`); runs for the life of machined on
/// control-plane nodes.
pub async fn run(
    config: MachineConfig,
    layout: Layout,
    network_ready: std::path::PathBuf,
    registry: Option<std::sync::Arc<crate::join::Registry>>,
) {
    let base = match slate_k8s::addons::objects(&config) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!("the bootstrap manifests cannot be made: {e}");
            return;
        }
    };
    let mut next_check = tokio::time::Instant::now();
    let mut next_apply = tokio::time::Instant::now();
    let mut applied: Option<Vec<(String, String)>> = None;
    loop {
        let now = tokio::time::Instant::now();
        if now >= next_check {
            let (c, l, n) = (config.clone(), layout.clone(), network_ready.clone());
            match tokio::task::spawn_blocking(move || prepare(&c, &l, &n)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!("Kubernetes control plane: {e}"),
                Err(e) => tracing::error!("Kubernetes control plane check: {e}"),
            }
            next_check = now + CHECK_EVERY;
        }
        let workers = match &registry {
            Some(r) => r.kubelet_tokens().await.unwrap_or_default(),
            None => Vec::new(),
        };
        // A worker that joined since the last apply needs its Secret now,
        // not at the next round; one forgotten or rejected since loses it.
        if now >= next_apply || applied.as_ref().is_some_and(|a| *a != workers) {
            let manifests = with_worker_tokens(&base, &workers);
            let gone: Vec<(String, String)> = applied
                .iter()
                .flatten()
                .filter(|w| !workers.contains(w))
                .cloned()
                .collect();
            let stale = with_worker_tokens(&[], &gone);
            match apply(&config, &layout, &manifests, &stale).await {
                Ok(()) => {
                    if applied.as_ref() != Some(&workers) {
                        tracing::info!(
                            "applied the bootstrap manifests ({} objects)",
                            manifests.len()
                        );
                    }
                    applied = Some(workers);
                    next_apply = now + REAPPLY_EVERY;
                }
                Err(e) => {
                    // Expected until the API server is up: debug, not warn.
                    tracing::debug!("bootstrap manifests: {e}");
                    next_apply = now + RETRY_APPLY;
                }
            }
        }
        tokio::time::sleep(TICK).await;
    }
}

/// `base` with a bootstrap-token Secret for each joined worker's token,
/// right after the cluster's own.
pub fn with_worker_tokens(
    base: &[slate_k8s::Manifest],
    workers: &[(String, String)],
) -> Vec<slate_k8s::Manifest> {
    let mut out = base.to_vec();
    let secrets = workers.iter().filter_map(|(id, token)| {
        let secret = slate_k8s::addons::bootstrap::token_secret(
            token,
            &format!("The machine token of worker {id}, joined with a join token."),
        )
        .and_then(|s| slate_k8s::Manifest::of(&s));
        match secret {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!("worker {id}'s token: {e}");
                None
            }
        }
    });
    let at = out.len().min(1);
    out.splice(at..at, secrets);
    out
}

/// One apply of `manifests` (and deletion of `stale`) with the node's
/// admin kubeconfig, through the API balancer when it is on, else to this
/// node's API server.
async fn apply(
    config: &MachineConfig,
    layout: &Layout,
    manifests: &[slate_k8s::Manifest],
    stale: &[slate_k8s::Manifest],
) -> Result<(), String> {
    let text = std::fs::read_to_string(layout.admin_kubeconfig())
        .map_err(|e| format!("{}: {e}", layout.admin_kubeconfig().display()))?;
    let mut kubeconfig = slate_k8s::kubeconfig::parse(&text)?;
    if config.cluster.api_balancer.enabled
        && let Some(cluster) = kubeconfig
            .clusters
            .first_mut()
            .and_then(|c| c.cluster.as_mut())
    {
        cluster.server = Some(slate_k8s::addons::api_url(config));
    }
    let client = slate_k8s::apply::client(kubeconfig)
        .await
        .map_err(|e| slate_common::error::chain(&e))?;
    slate_k8s::apply::apply_all(&client, manifests)
        .await
        .map_err(|e| slate_common::error::chain(&e))?;
    slate_k8s::apply::delete_all(&client, stale)
        .await
        .map_err(|e| slate_common::error::chain(&e))
}

/// An admin kubeconfig for the cluster's endpoint (`slatectl
/// kubeconfig`): issued on each call, one year, `O=system:masters`.
pub fn admin_kubeconfig(config: &MachineConfig) -> Result<String, String> {
    if config.cluster.ca.key.is_none() {
        return Err(
            "this node holds no cluster CA key: ask a control-plane node (slatectl -n CP kubeconfig)"
                .into(),
        );
    }
    pki::admin_kubeconfig(config, &config.cluster.control_plane.endpoint).map_err(|e| e.to_string())
}

/// What the listing reads of a static pod. Not `k8s-openapi`'s `Pod`:
/// its deserializer (every field of every PodSpec type) would add more to
/// machined, and so to the root image, than everything else here.
#[derive(serde::Deserialize)]
struct PodSummary {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    metadata: SummaryMeta,
    spec: SummarySpec,
}

#[derive(serde::Deserialize)]
struct SummaryMeta {
    name: String,
    namespace: Option<String>,
}

#[derive(serde::Deserialize)]
struct SummarySpec {
    containers: Vec<SummaryContainer>,
}

#[derive(serde::Deserialize)]
struct SummaryContainer {
    image: Option<String>,
}

impl PodSummary {
    fn checked(self) -> Result<Self, String> {
        if self.api_version != "v1" || self.kind != "Pod" {
            return Err(format!("{} {}, not v1 Pod", self.api_version, self.kind));
        }
        if self.spec.containers.is_empty() {
            return Err("no containers".into());
        }
        Ok(self)
    }
}

/// The static pods in `dir`, by file name; a file that is not a Pod is
/// listed with why.
pub fn static_pods(dir: &Path) -> Vec<StaticPod> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let file = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    return StaticPod {
                        file,
                        error: e.to_string(),
                        ..Default::default()
                    };
                }
            };
            let hash = slate_config::join::hex(
                &ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref()[..8],
            );
            let parsed = std::str::from_utf8(&bytes)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_saphyr::from_str::<PodSummary>(t).map_err(|e| e.to_string()))
                .and_then(PodSummary::checked);
            match parsed {
                Ok(pod) => StaticPod {
                    namespace: pod.metadata.namespace.unwrap_or_else(|| "default".into()),
                    name: pod.metadata.name,
                    file,
                    image: pod
                        .spec
                        .containers
                        .into_iter()
                        .next()
                        .and_then(|c| c.image)
                        .unwrap_or_default(),
                    hash,
                    error: String::new(),
                },
                Err(e) => StaticPod {
                    file,
                    hash,
                    error: format!("not a Pod: {e}"),
                    ..Default::default()
                },
            }
        })
        .collect()
}
