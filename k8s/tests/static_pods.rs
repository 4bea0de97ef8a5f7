//! The control plane's static pod manifests as kubelet would read them:
//! each file deserializes into the `k8s-openapi` Pod, every hostPath it
//! mounts exists once the node's secrets are written, and the config's
//! images, flags, volumes and resources are in it.
#![allow(clippy::unwrap_used)]

use k8s_openapi::api::core::v1::Pod;
use slate_config::{ExtraVolume, MachineConfig};
use slate_k8s::layout::Layout;
use slate_k8s::pki::{self, NodeNames};
use slate_k8s::static_pods;

fn config() -> MachineConfig {
    slate_config::generate::generate(&slate_config::generate::Options {
        cluster_name: "prod".into(),
        endpoint: "https://api.prod.example:6443".into(),
        ..Default::default()
    })
    .unwrap()
    .controlplane
}

/// Issues the secrets and writes the pods under a temporary root, as
/// machined does on the node; returns the pods read back from disk.
fn prepare(config: &MachineConfig, root: &std::path::Path) -> Vec<(String, Pod)> {
    let layout = Layout::under(root);
    let node = NodeNames {
        hostname: "cp-1".into(),
        addresses: vec!["10.5.0.2".parse().unwrap()],
    };
    pki::write(&layout, &pki::issue_all(config, &node).unwrap()).unwrap();
    let hash = |c: &str| static_pods::directory_hash(&layout.component(c));
    let pods = static_pods::pods(config, "10.5.0.2".parse().unwrap(), &layout, &hash).unwrap();
    static_pods::write(&layout, &pods).unwrap();
    let mut out: Vec<(String, Pod)> = std::fs::read_dir(&layout.manifests)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let pod: Pod = serde_saphyr::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not a Pod: {e}", path.display()));
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                pod,
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn command(pod: &Pod) -> Vec<String> {
    pod.spec.as_ref().unwrap().containers[0]
        .command
        .clone()
        .unwrap()
}

#[test]
fn three_pods_whose_host_paths_exist() {
    let dir = tempfile::tempdir().unwrap();
    let config = config();
    let pods = prepare(&config, dir.path());
    let files: Vec<&str> = pods.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        files,
        [
            "kube-apiserver.yaml",
            "kube-controller-manager.yaml",
            "kube-scheduler.yaml"
        ]
    );
    for (file, pod) in &pods {
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.host_network, Some(true), "{file}");
        assert_eq!(pod.metadata.namespace.as_deref(), Some("kube-system"));
        let name = pod.metadata.name.as_deref().unwrap();
        assert_eq!(
            spec.containers[0].image.as_deref(),
            Some(
                format!(
                    "registry.k8s.io/{name}:{}",
                    slate_config::KUBERNETES_VERSION
                )
                .as_str()
            )
        );
        for v in spec.volumes.as_ref().unwrap() {
            let path = &v.host_path.as_ref().unwrap().path;
            assert!(
                std::path::Path::new(path).is_dir(),
                "{file} mounts {path}, which does not exist"
            );
        }
        // Every file a flag names is in the pod's own secret directory.
        for flag in command(pod) {
            if let Some((_, value)) = flag.split_once("=/etc/kubernetes/slate/") {
                let on_host = dir.path().join("secrets").join(name).join(value);
                assert!(on_host.is_file(), "{file}: {flag} names a missing file");
            }
        }
    }
    let api = command(&pods[0].1);
    for want in [
        "--etcd-servers=https://127.0.0.1:2379",
        "--authorization-mode=Node,RBAC",
        "--enable-bootstrap-token-auth=true",
        "--service-cluster-ip-range=10.96.0.0/12",
        "--advertise-address=10.5.0.2",
        "--secure-port=6443",
        "--requestheader-allowed-names=front-proxy-client",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
    ] {
        assert!(api.iter().any(|a| a == want), "{want} not in {api:?}");
    }
    let cm = command(&pods[1].1);
    assert!(cm.iter().any(|a| a == "--cluster-cidr=10.244.0.0/16"));
    assert!(cm.iter().any(|a| a == "--cluster-name=prod"));
}

#[test]
fn the_config_changes_images_flags_volumes_and_resources() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config();
    let api = &mut config.cluster.api_server;
    api.image = Some("mirror.example/kube-apiserver:v1.37.0-patched".into());
    api.extra_args
        .insert("authorization-mode".into(), "Node,RBAC,Webhook".into());
    api.extra_args
        .insert("audit-log-maxage".into(), "30".into());
    api.extra_volumes.push(ExtraVolume {
        host_path: dir.path().display().to_string(),
        mount_path: "/var/log/audit".into(),
        read_only: false,
    });
    api.resources.limits.insert("memory".into(), "2Gi".into());
    config
        .cluster
        .scheduler
        .resources
        .requests
        .insert("cpu".into(), "300m".into());
    let pods = prepare(&config, dir.path());
    let api = &pods[0].1;
    let c = &api.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        c.image.as_deref(),
        Some("mirror.example/kube-apiserver:v1.37.0-patched")
    );
    let cmd = command(api);
    assert!(cmd.contains(&"--authorization-mode=Node,RBAC,Webhook".to_owned()));
    assert!(!cmd.contains(&"--authorization-mode=Node,RBAC".to_owned()));
    assert!(cmd.contains(&"--audit-log-maxage=30".to_owned()));
    assert!(
        c.volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .any(|m| m.mount_path == "/var/log/audit" && m.read_only == Some(false))
    );
    let res = c.resources.as_ref().unwrap();
    assert_eq!(res.limits.as_ref().unwrap()["memory"].0, "2Gi");
    assert_eq!(res.requests.as_ref().unwrap()["cpu"].0, "200m");
    let sched = &pods[2].1.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        sched.resources.as_ref().unwrap().requests.as_ref().unwrap()["cpu"].0,
        "300m"
    );
}

#[test]
fn reissued_secrets_change_the_manifest_so_kubelet_restarts_the_pod() {
    let dir = tempfile::tempdir().unwrap();
    let config = config();
    let hash = |pods: &[(String, Pod)]| {
        pods[0].1.metadata.annotations.as_ref().unwrap()[static_pods::SECRETS_HASH].clone()
    };
    let first = hash(&prepare(&config, dir.path()));
    let second = hash(&prepare(&config, dir.path()));
    assert_ne!(first, second, "fresh keys, same hash");
    assert_eq!(second.len(), 16);
}
