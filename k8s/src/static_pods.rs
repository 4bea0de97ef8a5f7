//! The control plane as static pods: kube-apiserver,
//! kube-controller-manager and kube-scheduler, as `k8s-openapi` Pods that
//! kubelet starts from its manifest directory.
//!
//! Flags are kubeadm's (and Talos's): etcd over mTLS on 127.0.0.1:2379,
//! Node and RBAC authorization, bootstrap-token authentication,
//! service-account issuer and keys, the front-proxy (aggregation layer)
//! settings. `extraArgs` replace a flag of the same name; `extraVolumes`
//! and `resources` come from the config.
//!
//! Each pod mounts its own secret directory ([`crate::pki`]) read-only and
//! carries a hash of it in an annotation: kubelet restarts a static pod
//! only when its manifest changes, so re-issued certificates change the
//! manifest too.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use k8s_openapi::api::core::v1::{
    Container, HTTPGetAction, HostPathVolumeSource, Pod, PodSecurityContext, PodSpec, Probe,
    ResourceRequirements, SeccompProfile, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use slate_config::{Component, MachineConfig};

use crate::K8sError;
use crate::layout::{API_SERVER_PORT, IN_POD_DIR, Layout};
use crate::pki::{API_SERVER, CONTROLLER_MANAGER, SCHEDULER};

/// Annotation holding the hash of the pod's secret directory.
pub const SECRETS_HASH: &str = "slate.dev/secrets-hash";

/// One static pod and the file it is written to.
#[derive(Debug, Clone)]
pub struct StaticPod {
    /// File name in the manifest directory (`kube-apiserver.yaml`).
    pub file: String,
    pub pod: Pod,
}

/// The three control-plane pods for `config` on a node whose address is
/// `advertise`; `secrets_hash(component)` gives each pod's secret hash.
pub fn pods(
    config: &MachineConfig,
    advertise: IpAddr,
    layout: &Layout,
    secrets_hash: &dyn Fn(&str) -> String,
) -> Result<Vec<StaticPod>, K8sError> {
    let c = &config.cluster;
    let pki = |f: &str| format!("{IN_POD_DIR}/{f}");
    let joined = |v: &[String]| v.join(",");

    let mut api = BTreeMap::new();
    for (k, v) in [
        ("advertise-address", advertise.to_string()),
        ("allow-privileged", "true".into()),
        ("anonymous-auth", "true".into()),
        ("authorization-mode", "Node,RBAC".into()),
        (
            "bind-address",
            if advertise.is_ipv6() { "::" } else { "0.0.0.0" }.into(),
        ),
        ("client-ca-file", pki("ca.crt")),
        ("enable-admission-plugins", "NodeRestriction".into()),
        ("enable-bootstrap-token-auth", "true".into()),
        ("etcd-cafile", pki("etcd-ca.crt")),
        ("etcd-certfile", pki("apiserver-etcd-client.crt")),
        ("etcd-keyfile", pki("apiserver-etcd-client.key")),
        ("etcd-servers", "https://127.0.0.1:2379".into()),
        (
            "kubelet-client-certificate",
            pki("apiserver-kubelet-client.crt"),
        ),
        ("kubelet-client-key", pki("apiserver-kubelet-client.key")),
        (
            "kubelet-preferred-address-types",
            "InternalIP,ExternalIP,Hostname".into(),
        ),
        ("profiling", "false".into()),
        ("proxy-client-cert-file", pki("front-proxy-client.crt")),
        ("proxy-client-key-file", pki("front-proxy-client.key")),
        ("requestheader-allowed-names", "front-proxy-client".into()),
        ("requestheader-client-ca-file", pki("front-proxy-ca.crt")),
        (
            "requestheader-extra-headers-prefix",
            "X-Remote-Extra-".into(),
        ),
        ("requestheader-group-headers", "X-Remote-Group".into()),
        ("requestheader-username-headers", "X-Remote-User".into()),
        ("secure-port", API_SERVER_PORT.to_string()),
        (
            "service-account-issuer",
            format!("https://kubernetes.default.svc.{}", c.network.dns_domain),
        ),
        ("service-account-key-file", pki("sa.pub")),
        ("service-account-signing-key-file", pki("sa.key")),
        (
            "service-cluster-ip-range",
            joined(&c.network.service_subnets),
        ),
        ("tls-cert-file", pki("apiserver.crt")),
        ("tls-private-key-file", pki("apiserver.key")),
        ("tls-min-version", "VersionTLS12".into()),
    ] {
        api.insert(k.to_owned(), v);
    }

    let kubeconfig = pki("kubeconfig");
    let mut cm = BTreeMap::new();
    for (k, v) in [
        ("allocate-node-cidrs", "true".into()),
        ("authentication-kubeconfig", kubeconfig.clone()),
        ("authorization-kubeconfig", kubeconfig.clone()),
        ("bind-address", "127.0.0.1".into()),
        ("client-ca-file", pki("ca.crt")),
        ("cluster-cidr", joined(&c.network.pod_subnets)),
        ("cluster-name", c.name.clone()),
        ("cluster-signing-cert-file", pki("ca.crt")),
        ("cluster-signing-key-file", pki("ca.key")),
        ("controllers", "*,bootstrapsigner,tokencleaner".into()),
        ("kubeconfig", kubeconfig.clone()),
        ("leader-elect", "true".into()),
        ("profiling", "false".into()),
        ("requestheader-client-ca-file", pki("front-proxy-ca.crt")),
        ("root-ca-file", pki("ca.crt")),
        ("service-account-private-key-file", pki("sa.key")),
        (
            "service-cluster-ip-range",
            joined(&c.network.service_subnets),
        ),
        ("use-service-account-credentials", "true".into()),
    ] {
        cm.insert(k.to_owned(), v);
    }

    let mut sched = BTreeMap::new();
    for (k, v) in [
        ("authentication-kubeconfig", kubeconfig.clone()),
        ("authorization-kubeconfig", kubeconfig.clone()),
        ("bind-address", "127.0.0.1".into()),
        ("kubeconfig", kubeconfig),
        ("leader-elect", "true".into()),
        ("profiling", "false".into()),
    ] {
        sched.insert(k.to_owned(), v);
    }

    let api_component = c.api_server.component();
    [
        (
            API_SERVER,
            api,
            &api_component,
            ("/livez", "/readyz", API_SERVER_PORT),
            ("200m", "512Mi"),
        ),
        (
            CONTROLLER_MANAGER,
            cm,
            &c.controller_manager,
            ("/healthz", "/healthz", 10257),
            ("50m", "256Mi"),
        ),
        (
            SCHEDULER,
            sched,
            &c.scheduler,
            ("/healthz", "/healthz", 10259),
            ("10m", "64Mi"),
        ),
    ]
    .into_iter()
    .map(|(name, flags, comp, health, requests)| {
        Ok(StaticPod {
            file: format!("{name}.yaml"),
            pod: pod(
                name,
                flags,
                comp,
                health,
                requests,
                layout,
                &secrets_hash(name),
            ),
        })
    })
    .collect()
}

#[allow(clippy::too_many_arguments)]
fn pod(
    name: &str,
    mut flags: BTreeMap<String, String>,
    comp: &Component,
    (live, ready, port): (&str, &str, u16),
    (cpu, memory): (&str, &str),
    layout: &Layout,
    secrets_hash: &str,
) -> Pod {
    flags.extend(comp.extra_args.clone());
    let mut command = vec![format!("/usr/local/bin/{name}")];
    command.extend(flags.iter().map(|(k, v)| format!("--{k}={v}")));

    let mut volumes = vec![host_path_volume(
        "secrets",
        &layout.component(name),
        Some("Directory"),
    )];
    let mut mounts = vec![mount("secrets", IN_POD_DIR, true)];
    for (i, v) in comp.extra_volumes.iter().enumerate() {
        let vol = format!("extra-{i}");
        volumes.push(host_path_volume(&vol, Path::new(&v.host_path), None));
        mounts.push(mount(&vol, &v.mount_path, v.read_only));
    }

    let quantities = |m: &BTreeMap<String, String>| {
        m.iter()
            .map(|(k, v)| (k.clone(), Quantity(v.clone())))
            .collect::<BTreeMap<_, _>>()
    };
    let mut requests = quantities(&comp.resources.requests);
    requests
        .entry("cpu".into())
        .or_insert_with(|| Quantity(cpu.into()));
    requests
        .entry("memory".into())
        .or_insert_with(|| Quantity(memory.into()));
    let limits = quantities(&comp.resources.limits);

    let probe = |path: &str, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            host: Some("127.0.0.1".into()),
            path: Some(path.into()),
            port: IntOrString::Int(port.into()),
            scheme: Some("HTTPS".into()),
            ..Default::default()
        }),
        initial_delay_seconds: Some(10),
        period_seconds: Some(10),
        timeout_seconds: Some(15),
        failure_threshold: Some(failures),
        ..Default::default()
    };

    let mut meta = crate::manifest::meta(name, Some("kube-system"));
    let labels = meta.labels.get_or_insert_with(Default::default);
    labels.insert("component".into(), name.into());
    labels.insert("tier".into(), "control-plane".into());
    meta.annotations = Some([(SECRETS_HASH.to_owned(), secrets_hash.to_owned())].into());

    let image = crate::images::or_default(comp.image.as_deref(), crate::images::kubernetes(name));
    Pod {
        metadata: meta,
        spec: Some(PodSpec {
            host_network: Some(true),
            priority_class_name: Some("system-node-critical".into()),
            priority: Some(2_000_001_000),
            security_context: Some(PodSecurityContext {
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            containers: vec![Container {
                name: name.into(),
                image: Some(image),
                image_pull_policy: Some("IfNotPresent".into()),
                command: Some(command),
                volume_mounts: Some(mounts),
                resources: Some(ResourceRequirements {
                    requests: Some(requests),
                    limits: (!limits.is_empty()).then_some(limits),
                    ..Default::default()
                }),
                liveness_probe: Some(probe(live, 8)),
                readiness_probe: (ready != live).then(|| Probe {
                    initial_delay_seconds: None,
                    period_seconds: Some(1),
                    failure_threshold: Some(3),
                    ..probe(ready, 3)
                }),
                startup_probe: Some(probe(live, 24)),
                ..Default::default()
            }],
            volumes: Some(volumes),
            ..Default::default()
        }),
        status: None,
    }
}

fn host_path_volume(name: &str, path: &Path, kind: Option<&str>) -> Volume {
    Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource {
            path: path.display().to_string(),
            type_: kind.map(str::to_owned),
        }),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..Default::default()
    }
}

/// The pod as the YAML kubelet reads.
pub fn render(pod: &Pod) -> Result<String, K8sError> {
    serde_saphyr::to_string(pod).map_err(|source| K8sError::Yaml {
        what: format!(
            "the {} manifest",
            pod.metadata.name.as_deref().unwrap_or("static pod")
        ),
        source,
    })
}

/// SHA-256 (hex, first 16 digits) of the files of `dir`, by name order:
/// changes whenever a certificate or key in it does.
pub fn directory_hash(dir: &Path) -> String {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for name in names {
        ctx.update(name.as_encoded_bytes());
        ctx.update(&std::fs::read(dir.join(&name)).unwrap_or_default());
    }
    slate_config::join::hex(&ctx.finish().as_ref()[..8])
}

/// Writes `pods` into the manifest directory, each atomically (0600:
/// they name secret paths, and kubelet runs as root).
pub fn write(layout: &Layout, pods: &[StaticPod]) -> Result<(), K8sError> {
    std::fs::create_dir_all(&layout.manifests).map_err(|source| K8sError::Write {
        path: layout.manifests.display().to_string(),
        source,
    })?;
    for p in pods {
        let path = layout.manifests.join(&p.file);
        let text = render(&p.pod)?;
        // Unchanged manifests are left alone: kubelet restarts a pod
        // whenever its file changes.
        if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
            continue;
        }
        slate_common::fs::write_atomic(&path, text.as_bytes(), 0o600)?;
    }
    Ok(())
}
