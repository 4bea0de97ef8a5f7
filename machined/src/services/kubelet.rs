//! kubelet as a service: the files and flags a real kubelet needs, written
//! before every start from the machine config, and the node's readiness
//! for it checked.
//!
//! - `config.yaml`: a `KubeletConfiguration` (CRI socket of containerd,
//!   cgroupfs driver, webhook authn/authz with the cluster CA, healthz on
//!   127.0.0.1:10248, cluster DNS from the service network);
//! - `bootstrap-kubeconfig`: the API endpoint (the local API balancer when
//!   `cluster.apiBalancer` is on), the cluster CA and the bootstrap token,
//!   with which kubelet gets its own certificate (`--kubeconfig`);
//! - `--node-ip`: picked at each start from the node's addresses
//!   (`machine.kubelet.nodeIP.validSubnets`, `!CIDR` excludes).
//!
//! Readiness: IPv4 forwarding is switched on, and kubelet does not start
//! while br_netfilter is missing or swap is on; each shows as the
//! service's Failed event, and the start is retried.
//!
//! The kubelet binary is not downloadable where Slate is built: the image
//! takes it as an extension (`slate-image --extension kubelet=PATH`). The
//! tests run `kubelet-standin` (tests/src/bin), which only answers
//! `/healthz`; this module is what runs the real one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use slate_config::MachineConfig;

use super::layer::CONTAINERD_SOCKET;
use super::spec::{Condition, HealthCheck, Probe, ServiceSpec};
use crate::node_ip::node_ip;

/// Where kubelet's files are, and what the checks read.
#[derive(Debug, Clone)]
pub struct KubeletPaths {
    /// kubelet's directory (`/var/lib/kubelet`).
    pub dir: PathBuf,
    /// networkd's ready file: the node's addresses.
    pub network_ready: PathBuf,
    /// `/proc/sys`, for forwarding and br_netfilter.
    pub proc_sys: PathBuf,
    /// `/proc/swaps`.
    pub swaps: PathBuf,
    /// The control plane's secrets and kubelet's static pod directory.
    pub k8s: slate_k8s::layout::Layout,
    /// The layer's image archives, and the file that says they were
    /// imported ([`crate::images`]).
    pub image_archives: PathBuf,
    pub images_imported: PathBuf,
    /// Where a kubelet from `machine.kubelet.source` is kept (EPHEMERAL).
    pub downloads: PathBuf,
}

impl Default for KubeletPaths {
    fn default() -> Self {
        Self {
            dir: "/var/lib/kubelet".into(),
            network_ready: slate_common::constants::NETWORK_READY_FILE.into(),
            proc_sys: "/proc/sys".into(),
            swaps: "/proc/swaps".into(),
            k8s: slate_k8s::layout::Layout::default(),
            image_archives: crate::images::ARCHIVES.into(),
            images_imported: crate::images::IMPORTED.into(),
            downloads: "/var/lib/slate/kubelet".into(),
        }
    }
}

impl KubeletPaths {
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }
    pub fn bootstrap_kubeconfig(&self) -> PathBuf {
        self.dir.join("bootstrap-kubeconfig")
    }
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
}

/// kubelet's health endpoint.
pub const HEALTHZ: &str = "127.0.0.1:10248";

/// The kubelet service for `config`, running `program`.
pub fn spec(program: &Path, config: &MachineConfig, paths: KubeletPaths) -> ServiceSpec {
    let mut args = vec![
        program.display().to_string(),
        format!("--config={}", paths.config().display()),
        format!(
            "--bootstrap-kubeconfig={}",
            paths.bootstrap_kubeconfig().display()
        ),
        format!("--kubeconfig={}", paths.kubeconfig().display()),
        format!("--cert-dir={}", paths.dir.join("pki").display()),
    ];
    args.extend(super::spec::flags(&config.machine.kubelet.extra_args));
    let mut spec = ServiceSpec::with_command("kubelet", args);
    spec.depends = vec![
        Condition::Service("containerd".into()),
        Condition::File(paths.network_ready.clone()),
    ];
    spec.health = Some(HealthCheck {
        probe: Probe::Http {
            addr: HEALTHZ.into(),
            path: "/healthz".into(),
        },
        interval: Duration::from_secs(2),
        timeout: Duration::from_secs(2),
    });
    let config = config.clone();
    spec.prepare = Some(match config.machine.kubelet.source.clone() {
        None => super::spec::prepare_with(move || prepare(&config, &paths)),
        // Fetched (and checked) first, then the files as always.
        Some(source) => std::sync::Arc::new(move |progress| {
            let (config, paths, source) = (config.clone(), paths.clone(), source.clone());
            Box::pin(async move {
                ensure_downloaded(&source, &paths.downloads, &progress).await?;
                tokio::task::spawn_blocking(move || prepare(&config, &paths))
                    .await
                    .map_err(|e| e.to_string())?
            })
        }),
    });
    spec
}

/// The largest kubelet download accepted (a real one is ~80 MiB).
const MAX_KUBELET_BYTES: u64 = 512 * 1024 * 1024;

/// Where the kubelet of `source` is kept in `dir`: named by its digest, so
/// a config naming another one downloads anew.
pub fn downloaded(dir: &Path, source: &slate_config::KubeletSource) -> PathBuf {
    let digest = source.sha256.to_ascii_lowercase();
    dir.join(format!("kubelet-{}", &digest[..digest.len().min(16)]))
}

/// Makes sure the kubelet of `source` is in `dir`, whole and with the
/// digest the config names: downloaded to a temporary file, checked, then
/// renamed into place; a mismatch deletes it and fails the start, naming
/// both digests (the start is retried with the service's backoff).
async fn ensure_downloaded(
    source: &slate_config::KubeletSource,
    dir: &Path,
    progress: &super::spec::Progress,
) -> Result<(), String> {
    let path = downloaded(dir, source);
    let want = source.sha256.to_ascii_lowercase();
    if path.is_file() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let part = path.with_extension("part");
    let shown = crate::url::redacted(&source.url);
    progress.note(format!("downloading kubelet from {shown}"));
    let got = crate::url::download(&source.url, &part, 0o755, MAX_KUBELET_BYTES)
        .await
        .map_err(|e| {
            let _ = std::fs::remove_file(&part);
            format!(
                "downloading kubelet from {shown}: {}",
                slate_common::error::chain(&e)
            )
        })?;
    if got != want {
        let _ = std::fs::remove_file(&part);
        return Err(format!(
            "machine.kubelet.source: {shown} has SHA-256 {got}, not the {want} the config names; not run"
        ));
    }
    std::fs::rename(&part, &path).map_err(|e| format!("placing {}: {e}", path.display()))?;
    tracing::info!("kubelet from {shown} verified (sha256 {got})");
    Ok(())
}

/// Checks the node, writes the files, returns the per-start flags.
fn prepare(config: &MachineConfig, paths: &KubeletPaths) -> Result<Vec<String>, String> {
    check_node(paths)?;
    if !crate::images::ready(&paths.image_archives, &paths.images_imported) {
        return Err("waiting for the layer's image archives to be imported into containerd".into());
    }
    let ready = std::fs::read_to_string(&paths.network_ready).unwrap_or_default();
    let node_ip = node_ip(&ready, &config.machine.kubelet.node_ip.valid_subnets)
        .ok_or("no node address in the valid subnets yet")?;
    std::fs::create_dir_all(&paths.dir)
        .map_err(|e| format!("creating {}: {e}", paths.dir.display()))?;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(config.cluster.ca.crt.trim())
        .map_err(|e| format!("cluster.ca.crt is not base64: {e}"))?;
    let write = |path: PathBuf, bytes: &[u8], mode: u32| {
        slate_common::fs::write_atomic(&path, bytes, mode)
            .map_err(|e| slate_common::error::chain(&e))
    };
    write(paths.ca(), &ca, 0o644)?;
    write(
        paths.config(),
        kubelet_config(config, &paths.ca(), &paths.k8s.manifests)?.as_bytes(),
        0o644,
    )?;
    // A control-plane node's kubelet starts the control plane from its
    // manifests: they must be there first.
    if crate::kubernetes::runs_control_plane(config) {
        crate::kubernetes::prepare(config, &paths.k8s, &paths.network_ready)?;
    }
    // The token is a credential: root only.
    write(
        paths.bootstrap_kubeconfig(),
        bootstrap_kubeconfig(config).as_bytes(),
        0o600,
    )?;
    Ok(vec![format!("--node-ip={node_ip}")])
}

/// What kubelet needs of the kernel: forwarding on (set here), bridged
/// traffic through iptables (br_netfilter), no swap.
fn check_node(paths: &KubeletPaths) -> Result<(), String> {
    let forward = paths.proc_sys.join("net/ipv4/ip_forward");
    std::fs::write(&forward, "1").map_err(|e| format!("enabling IPv4 forwarding: {e}"))?;
    if !paths
        .proc_sys
        .join("net/bridge/bridge-nf-call-iptables")
        .exists()
    {
        return Err(
            "br_netfilter is not loaded: pods' bridged traffic would bypass iptables".into(),
        );
    }
    let swaps = std::fs::read_to_string(&paths.swaps).unwrap_or_default();
    if swaps.lines().skip(1).any(|l| !l.trim().is_empty()) {
        return Err("swap is on; kubelet needs it off".into());
    }
    Ok(())
}

fn kubelet_config(config: &MachineConfig, ca: &Path, manifests: &Path) -> Result<String, String> {
    Ok(format!(
        "# Written by slate machined before every start of kubelet.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: {ca}
authorization:
  mode: Webhook
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://{CONTAINERD_SOCKET}
clusterDomain: {domain}
clusterDNS:
  - {dns}
healthzBindAddress: 127.0.0.1
healthzPort: 10248
rotateCertificates: true
staticPodPath: {manifests}
failSwapOn: true
",
        ca = ca.display(),
        domain = config.cluster.network.dns_domain,
        dns = slate_k8s::addons::dns_service_ip(config).map_err(|e| e.to_string())?,
        manifests = manifests.display(),
    ))
}

fn bootstrap_kubeconfig(config: &MachineConfig) -> String {
    let name = &config.cluster.name;
    format!(
        "# Written by slate machined before every start of kubelet.
apiVersion: v1
kind: Config
clusters:
  - name: {name}
    cluster:
      server: {server}
      certificate-authority-data: {ca}
users:
  - name: kubelet-bootstrap
    user:
      token: {token}
contexts:
  - name: kubelet-bootstrap
    context:
      cluster: {name}
      user: kubelet-bootstrap
current-context: kubelet-bootstrap
",
        server = slate_k8s::addons::api_url(config),
        ca = config.cluster.ca.crt.trim(),
        token = config.machine.token,
    )
}
