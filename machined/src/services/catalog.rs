//! The node's services, as far as the image carries their programs: the
//! extension layer on `/usr/local` ([`super::layer::EXTENSIONS_BIN`]) decides what runs.
//!
//! containerd runs whenever the layer has it; etcd on control-plane nodes
//! whose layer has it ([`crate::etcd`]); kubelet when the layer has one and
//! the node has a config ([`super::kubelet`]); and the services the layer
//! declares itself (`etc/slate/services/*.yaml`,
//! [`slate_config::extension_service`]). The mesh's discovery service
//! is in the root image and runs on control-plane nodes ([`runs_discovery`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use slate_common::constants::DISCOVERY_PORT;
use slate_config::MachineConfig;

use super::layer::{CONTAINERD_SOCKET, EXTENSIONS_LIB};
use super::spec::{
    Condition, HealthCheck, KillMode, Limits, Probe, RestartPolicy, ServiceSpec, prepare_with,
};

const CONTAINERD_CONFIG: &str = "/run/slate/containerd/config.toml";

/// The specs of the services whose programs are in `bin`; kubelet only
/// with a machine config, etcd when the node runs one.
pub fn specs(
    bin: &Path,
    config: Option<&MachineConfig>,
    etcd: Option<&std::sync::Arc<crate::etcd::Etcd>>,
) -> Vec<ServiceSpec> {
    let mut out = Vec::new();
    if bin.join("containerd").is_file() {
        out.push(containerd(
            bin,
            Path::new(CONTAINERD_CONFIG),
            super::cni::CniDirs::default(),
        ));
    }
    if let Some(etcd) = etcd {
        out.push(etcd.spec(&bin.join("etcd")));
    }
    if let Some(layer) = bin.parent() {
        out.extend(extension_services(
            &layer.join(slate_config::extension_service::DIR_IN_LAYER),
        ));
    }
    if let Some(config) = config
        && runs_discovery(config)
    {
        out.push(discovery(Path::new(DISCOVERY_BIN)));
    }
    // A kubelet to download is there once its preparation fetched it.
    let source = config.and_then(|c| c.machine.kubelet.source.as_ref());
    let kubelet = match source {
        Some(source) => {
            super::kubelet::downloaded(&super::kubelet::KubeletPaths::default().downloads, source)
        }
        None => config
            .and_then(|c| c.machine.kubelet.image.as_deref())
            .map_or_else(|| bin.join("kubelet"), PathBuf::from),
    };
    if let Some(config) = config
        && (kubelet.is_file() || source.is_some())
    {
        out.push(super::kubelet::spec(
            &kubelet,
            config,
            super::kubelet::KubeletPaths::default(),
        ));
    }
    out
}

/// The services the layer declares in `dir` (`*.yaml`); a declaration
/// that does not parse is logged and skipped, never the others.
pub fn extension_services(dir: &Path) -> Vec<ServiceSpec> {
    use slate_config::extension_service::ExtensionService;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|path| {
            let parsed = std::fs::read_to_string(&path)
                .map_err(|e| format!("{}: {e}", path.display()))
                .and_then(|text| {
                    ExtensionService::parse(&text, &path.display().to_string())
                        .map_err(|e| e.to_string())
                });
            match parsed {
                Ok(service) => Some(extension_spec(&service)),
                Err(e) => {
                    tracing::error!("extension service skipped: {e}");
                    None
                }
            }
        })
        .collect()
}

/// The supervisor's spec for a declared extension service.
pub fn extension_spec(s: &slate_config::extension_service::ExtensionService) -> ServiceSpec {
    use slate_config::extension_service::Restart;
    let mut spec = ServiceSpec::with_command(&s.name, s.command.clone());
    spec.env = vec![("LD_LIBRARY_PATH".into(), EXTENSIONS_LIB.into())];
    spec.env
        .extend(s.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    spec.restart.policy = match s.restart {
        Restart::Always => RestartPolicy::Always,
        Restart::OnFailure => RestartPolicy::OnFailure,
        Restart::Never => RestartPolicy::Never,
    };
    if s.depends_on.network {
        spec.depends.push(Condition::File(
            slate_common::constants::NETWORK_READY_FILE.into(),
        ));
    }
    spec.depends.extend(
        s.depends_on
            .services
            .iter()
            .map(|id| Condition::Service(id.clone())),
    );
    spec.limits = Limits {
        memory_max: s.limits.memory_mib.map(|m| m.saturating_mul(1 << 20)),
        pids_max: s.limits.pids,
        // cpu.max is per 100 ms period: 1 % of a core is 1000 µs.
        cpu_max_us: s.limits.cpu_percent.map(|p| p.saturating_mul(1000)),
        oom_score_adj: s.limits.oom_score_adj,
    };
    spec
}

/// The mesh discovery service in the root image (a name of `slated`).
pub const DISCOVERY_BIN: &str = "/usr/bin/slate-discovery";

/// A control-plane node runs the mesh's discovery service when the mesh is
/// on and the config names no other: networkd's default is the service at
/// the control-plane endpoint's host, [`DISCOVERY_PORT`].
pub fn runs_discovery(config: &MachineConfig) -> bool {
    let mesh = &config.cluster.mesh;
    config.machine.kind == slate_config::MachineType::Controlplane
        && mesh.enabled
        && mesh.discovery.endpoint.is_none()
}

/// The discovery service: it keeps sealed records it cannot read, so it
/// needs nothing of the node but a port.
pub fn discovery(program: &Path) -> ServiceSpec {
    let mut spec = ServiceSpec::new("discovery", &[&program.display().to_string()]);
    spec.health = Some(HealthCheck {
        probe: Probe::Http {
            addr: format!("127.0.0.1:{DISCOVERY_PORT}"),
            path: "/healthz".into(),
        },
        interval: Duration::from_secs(5),
        timeout: Duration::from_secs(2),
    });
    spec.limits = Limits {
        // Its store is bounded (256 MiB of records at most by default).
        memory_max: Some(320 << 20),
        ..Limits::default()
    };
    spec
}

/// containerd with the CRI plugin on, its state under /var (EPHEMERAL on
/// an installed node) and /run, runc from the extension layer, the CNI
/// directories of [`super::cni`].
pub fn containerd(bin: &Path, config: &Path, cni: super::cni::CniDirs) -> ServiceSpec {
    let program = bin.join("containerd");
    let mut spec = ServiceSpec::new(
        "containerd",
        &[
            &program.display().to_string(),
            "--config",
            &config.display().to_string(),
        ],
    );
    spec.env = vec![("LD_LIBRARY_PATH".into(), EXTENSIONS_LIB.into())];
    let config: PathBuf = config.to_owned();
    let runc = bin.join("runc");
    let layer_bin = bin.to_owned();
    spec.prepare = Some(prepare_with(move || {
        super::cni::prepare(&layer_bin, &cni)?;
        let text = containerd_config(&runc, &cni);
        if let Some(dir) = config.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        slate_common::fs::write_atomic(&config, text.as_bytes(), 0o644)
            .map_err(|e| slate_common::error::chain(&e))?;
        Ok(Vec::new())
    }));
    spec.health = Some(HealthCheck {
        probe: Probe::Unix(CONTAINERD_SOCKET.into()),
        interval: Duration::from_secs(2),
        timeout: Duration::from_secs(2),
    });
    // Its shims run the containers: a restart of containerd keeps them.
    spec.kill_mode = KillMode::Process;
    spec.limits = Limits {
        // The runtime under every pod: the kernel should pick almost
        // anything else first.
        oom_score_adj: Some(-999),
        ..Limits::default()
    };
    spec
}

/// containerd's config (version 2 schema of containerd 1.6).
pub fn containerd_config(runc: &Path, cni: &super::cni::CniDirs) -> String {
    format!(
        r#"# Written by slate machined at every start of containerd.
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"

[grpc]
  address = "{CONTAINERD_SOCKET}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.9"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  BinaryName = "{}"
  SystemdCgroup = false

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{}"
  conf_dir = "{}"
"#,
        runc.display(),
        cni.bin.display(),
        cni.conf.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_services_whose_programs_exist() {
        let dir = tempfile::tempdir().unwrap();
        assert!(specs(dir.path(), None, None).is_empty());
        std::fs::write(dir.path().join("containerd"), "").unwrap();
        let specs = specs(dir.path(), None, None);
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].id, "containerd");
        assert!(specs[0].command[0].ends_with("/containerd"));
    }

    #[test]
    fn control_plane_nodes_run_discovery_when_the_mesh_needs_theirs() {
        let generated = slate_config::generate::generate(&slate_config::generate::Options {
            cluster_name: "c".into(),
            endpoint: "https://10.0.0.1:6443".into(),
            ..Default::default()
        })
        .unwrap();
        let ids = |c: &MachineConfig| -> Vec<String> {
            let dir = tempfile::tempdir().unwrap();
            specs(dir.path(), Some(c), None)
                .into_iter()
                .map(|s| s.id)
                .collect()
        };
        let (mut cp, mut worker) = (generated.controlplane, generated.worker);
        assert!(ids(&cp).is_empty(), "mesh off");
        cp.cluster.mesh.enabled = true;
        worker.cluster.mesh.enabled = true;
        assert_eq!(ids(&cp), ["discovery"]);
        assert!(ids(&worker).is_empty(), "workers do not");
        cp.cluster.mesh.discovery.endpoint = Some("https://discovery.example".into());
        assert!(ids(&cp).is_empty(), "the config names another service");
    }

    #[test]
    fn declared_services_run_with_their_limits_and_bad_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let services = dir.path().join("etc/slate/services");
        std::fs::create_dir_all(&services).unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::fs::write(
            services.join("hog.yaml"),
            "name: hog\ncommand: [/usr/local/bin/hog]\nrestart: on-failure\ndependsOn: {network: true}\nlimits: {memoryMiB: 32, pids: 8, cpuPercent: 50}\n",
        )
        .unwrap();
        std::fs::write(services.join("broken.yaml"), "name: [\n").unwrap();
        std::fs::write(services.join("README"), "not a declaration").unwrap();
        let specs = specs(&dir.path().join("bin"), None, None);
        assert_eq!(specs.len(), 1, "only the valid declaration");
        let hog = &specs[0];
        assert_eq!(hog.id, "hog");
        assert_eq!(hog.restart.policy, RestartPolicy::OnFailure);
        assert_eq!(hog.limits.memory_max, Some(32 << 20));
        assert_eq!(hog.limits.pids_max, Some(8));
        assert_eq!(hog.limits.cpu_max_us, Some(50_000));
        assert_eq!(hog.depends.len(), 1);
    }

    #[tokio::test]
    async fn containerd_writes_its_config_before_it_starts() {
        use crate::services::spec::Progress;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("sub/config.toml");
        let layer = dir.path().join("layer-bin");
        std::fs::create_dir_all(&layer).unwrap();
        std::fs::write(layer.join("bridge"), "").unwrap();
        std::fs::write(layer.join("portmap"), "").unwrap();
        let cni = crate::services::cni::CniDirs {
            bin: dir.path().join("cni/bin"),
            conf: dir.path().join("cni/net.d"),
        };
        // flannel's own plugin, copied there by its DaemonSet, stays.
        std::fs::create_dir_all(&cni.bin).unwrap();
        std::fs::write(cni.bin.join("flannel"), "flannel").unwrap();
        let spec = containerd(&layer, &config, cni.clone());
        for _ in 0..2 {
            (spec.prepare.clone().unwrap())(Progress::new(|_| {}))
                .await
                .unwrap();
        }
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(
            text.contains(&format!(
                "BinaryName = \"{}\"",
                layer.join("runc").display()
            )),
            "{text}"
        );
        assert!(text.contains(CONTAINERD_SOCKET));
        assert!(
            text.contains(&format!("bin_dir = \"{}\"", cni.bin.display())),
            "{text}"
        );
        assert!(text.contains(&format!("conf_dir = \"{}\"", cni.conf.display())));
        assert!(cni.conf.is_dir());
        assert_eq!(
            std::fs::read_link(cni.bin.join("bridge")).unwrap(),
            layer.join("bridge")
        );
        assert_eq!(
            std::fs::read_link(cni.bin.join("portmap")).unwrap(),
            layer.join("portmap")
        );
        assert!(!cni.bin.join("host-local").exists(), "not in the layer");
        assert_eq!(
            std::fs::read_to_string(cni.bin.join("flannel")).unwrap(),
            "flannel"
        );
    }
}
