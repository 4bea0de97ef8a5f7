//! kube-proxy: its ServiceAccount, the binding to `system:node-proxier`,
//! its ConfigMap (`config.conf` and `kubeconfig.conf`) and the DaemonSet
//! that runs it on every node.
//!
//! This mirrors the manifest kubeadm deploys (its `kube-proxy` add-on
//! phase), so that kube-proxy behaves, and is debugged, the way Kubernetes
//! users expect. kubeadm's extra Role letting joining nodes read the
//! ConfigMap is left out: Slate's nodes join from their machine config,
//! not from objects in the cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PodSpec, PodTemplateSpec, SecurityContext, ServiceAccount, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde_json::json;
use slate_config::MachineConfig;

use super::build::{
    config_map_volume, field_env, host_path, labeled, labels, mount, service_account_binding,
    to_yaml,
};
use crate::manifest::meta;
use crate::{K8sError, Manifest, images};

const NAME: &str = "kube-proxy";
const NAMESPACE: &str = "kube-system";
/// Where the ConfigMap is mounted in the container.
const CONFIG_DIR: &str = "/var/lib/kube-proxy";
/// The service-account credentials kubelet projects into every pod.
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// `k8s-app: kube-proxy`, the label kubeadm selects kube-proxy's pods by.
const APP_LABEL: (&str, &str) = ("k8s-app", NAME);

/// kube-proxy's objects, in apply order.
pub fn objects(config: &MachineConfig) -> Result<Vec<Manifest>, K8sError> {
    let service_account = ServiceAccount {
        metadata: meta(NAME, Some(NAMESPACE)),
        ..Default::default()
    };
    // `system:node-proxier` is a built-in ClusterRole with exactly what
    // kube-proxy needs (watch Services and EndpointSlices, emit events).
    let binding = service_account_binding(
        meta("slate:node-proxier", None),
        "system:node-proxier",
        NAMESPACE,
        NAME,
    );
    let config_map = ConfigMap {
        metadata: labeled(meta(NAME, Some(NAMESPACE)), &[APP_LABEL]),
        data: Some(BTreeMap::from([
            ("config.conf".to_owned(), proxy_config(config)?),
            ("kubeconfig.conf".to_owned(), kubeconfig(config)?),
        ])),
        ..Default::default()
    };
    Ok(vec![
        Manifest::of(&service_account)?,
        Manifest::of(&binding)?,
        Manifest::of(&config_map)?,
        Manifest::of(&daemon_set(config))?,
    ])
}

/// `config.conf`: the KubeProxyConfiguration kube-proxy reads with
/// `--config`. Only what differs from kube-proxy's defaults is set.
fn proxy_config(config: &MachineConfig) -> Result<String, K8sError> {
    let doc = json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        // Traffic from outside these networks to a Service is masqueraded.
        "clusterCIDR": config.cluster.network.pod_subnets.join(","),
        "mode": "iptables",
        "clientConnection": { "kubeconfig": format!("{CONFIG_DIR}/kubeconfig.conf") },
    });
    to_yaml("kube-proxy config.conf", &doc)
}

/// `kubeconfig.conf`: kube-proxy authenticates with its service-account
/// token, and reaches the API by address rather than through the
/// `kubernetes` Service, since kube-proxy is what makes Services work.
fn kubeconfig(config: &MachineConfig) -> Result<String, K8sError> {
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "default",
            "cluster": {
                "server": crate::addons::api_url(config),
                "certificate-authority": format!("{SA_DIR}/ca.crt"),
            },
        }],
        "contexts": [{
            "name": "default",
            "context": { "cluster": "default", "namespace": "default", "user": "default" },
        }],
        "current-context": "default",
        "users": [{
            "name": "default",
            "user": { "tokenFile": format!("{SA_DIR}/token") },
        }],
    });
    to_yaml("kube-proxy kubeconfig.conf", &doc)
}

/// The DaemonSet: one privileged kube-proxy per node on the host network,
/// tolerating every taint so that Services work on every node.
fn daemon_set(config: &MachineConfig) -> DaemonSet {
    let image = images::or_default(
        config.cluster.proxy.image.as_deref(),
        images::kubernetes(NAME),
    );
    // The host paths are mounted where they are on the host.
    let (xtables, xtables_mount) = host_path(
        "xtables-lock",
        "/run/xtables.lock",
        Some("FileOrCreate"),
        "/run/xtables.lock",
        false,
    );
    let (modules, modules_mount) =
        host_path("lib-modules", "/lib/modules", None, "/lib/modules", true);
    let config_volume = config_map_volume(NAME, NAME);
    let config_mount = mount(NAME, CONFIG_DIR, false);
    let container = Container {
        name: NAME.into(),
        image: Some(image),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec![
            "/usr/local/bin/kube-proxy".into(),
            format!("--config={CONFIG_DIR}/config.conf"),
            // Kubelet names the node after its hostname unless told
            // otherwise; the pod's node name is always the right one.
            "--hostname-override=$(NODE_NAME)".into(),
        ]),
        env: Some(vec![field_env("NODE_NAME", "spec.nodeName")]),
        // It programs the host's iptables and loads kernel modules.
        security_context: Some(SecurityContext {
            privileged: Some(true),
            ..Default::default()
        }),
        volume_mounts: Some(vec![config_mount, xtables_mount, modules_mount]),
        ..Default::default()
    };
    DaemonSet {
        metadata: labeled(meta(NAME, Some(NAMESPACE)), &[APP_LABEL]),
        spec: DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(labels(&[APP_LABEL])),
                ..Default::default()
            },
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                ..Default::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&[APP_LABEL])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    priority_class_name: Some("system-node-critical".into()),
                    containers: vec![container],
                    host_network: Some(true),
                    service_account_name: Some(NAME.into()),
                    volumes: Some(vec![config_volume, xtables, modules]),
                    tolerations: Some(vec![Toleration {
                        operator: Some("Exists".into()),
                        ..Default::default()
                    }]),
                    node_selector: Some(labels(&[("kubernetes.io/os", "linux")])),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addons::testing::{config, find, typed};
    use k8s_openapi::api::rbac::v1::ClusterRoleBinding;

    fn data(objects: &[Manifest], key: &str) -> serde_json::Value {
        let cm: ConfigMap = typed(find(objects, "ConfigMap"));
        let text = &cm.data.unwrap()[key];
        serde_saphyr::from_str(text).unwrap()
    }

    fn container(objects: &[Manifest]) -> Container {
        let ds: DaemonSet = typed(find(objects, "DaemonSet"));
        ds.spec.template.spec.unwrap().containers.remove(0)
    }

    #[test]
    fn objects_come_in_apply_order_and_round_trip() {
        let objects = objects(&config()).unwrap();
        let kinds: Vec<_> = objects.iter().map(|m| m.describe()).collect();
        assert_eq!(
            kinds,
            [
                "ServiceAccount kube-system/kube-proxy",
                "ClusterRoleBinding slate:node-proxier",
                "ConfigMap kube-system/kube-proxy",
                "DaemonSet kube-system/kube-proxy",
            ]
        );
        let _: ServiceAccount = typed(&objects[0]);
        let binding: ClusterRoleBinding = typed(&objects[1]);
        assert_eq!(binding.role_ref.name, "system:node-proxier");
        let subject = &binding.subjects.unwrap()[0];
        assert_eq!(
            (subject.kind.as_str(), subject.name.as_str()),
            ("ServiceAccount", "kube-proxy")
        );
        assert_eq!(subject.namespace.as_deref(), Some("kube-system"));
        let _: ConfigMap = typed(&objects[2]);
        let _: DaemonSet = typed(&objects[3]);
    }

    #[test]
    fn proxy_config_has_the_pod_networks_and_iptables() {
        let mut config = config();
        config.cluster.network.pod_subnets = vec!["10.244.0.0/16".into(), "fd00:10::/56".into()];
        let doc = data(&objects(&config).unwrap(), "config.conf");
        assert_eq!(doc["apiVersion"], "kubeproxy.config.k8s.io/v1alpha1");
        assert_eq!(doc["kind"], "KubeProxyConfiguration");
        assert_eq!(doc["clusterCIDR"], "10.244.0.0/16,fd00:10::/56");
        assert_eq!(doc["mode"], "iptables");
        assert_eq!(
            doc["clientConnection"]["kubeconfig"],
            "/var/lib/kube-proxy/kubeconfig.conf"
        );
    }

    #[test]
    fn kubeconfig_uses_the_api_url_and_the_service_account() {
        let config = config();
        let doc = data(&objects(&config).unwrap(), "kubeconfig.conf");
        let cluster = &doc["clusters"][0]["cluster"];
        assert_eq!(cluster["server"], crate::addons::api_url(&config).as_str());
        assert_eq!(
            cluster["certificate-authority"],
            "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
        );
        assert_eq!(
            doc["users"][0]["user"]["tokenFile"],
            "/var/run/secrets/kubernetes.io/serviceaccount/token"
        );
        assert_eq!(doc["current-context"], "default");
        assert_eq!(doc["contexts"][0]["context"]["user"], "default");
    }

    #[test]
    fn image_is_the_default_or_the_configured_one() {
        let mut config = config();
        let default = container(&objects(&config).unwrap()).image.unwrap();
        assert_eq!(default, images::kubernetes("kube-proxy"));
        assert!(default.starts_with("registry.k8s.io/kube-proxy:v"));

        config.cluster.proxy.image = Some("mirror.example/kube-proxy:v9".into());
        let configured = container(&objects(&config).unwrap()).image.unwrap();
        assert_eq!(configured, "mirror.example/kube-proxy:v9");
    }

    #[test]
    fn daemon_set_runs_privileged_on_every_node() {
        let objects = objects(&config()).unwrap();
        let ds: DaemonSet = typed(find(&objects, "DaemonSet"));
        let spec = ds.spec;
        assert_eq!(
            spec.update_strategy.unwrap().type_.unwrap(),
            "RollingUpdate"
        );
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.host_network, Some(true));
        assert_eq!(pod.service_account_name.as_deref(), Some("kube-proxy"));
        assert_eq!(
            pod.priority_class_name.as_deref(),
            Some("system-node-critical")
        );
        let tolerations = pod.tolerations.unwrap();
        assert_eq!(tolerations.len(), 1);
        assert_eq!(tolerations[0].operator.as_deref(), Some("Exists"));
        assert_eq!(tolerations[0].key, None);
        assert_eq!(pod.node_selector.unwrap()["kubernetes.io/os"], "linux");
        // The selector matches the pods it makes.
        let labels = spec.template.metadata.unwrap().labels.unwrap();
        for (k, v) in spec.selector.match_labels.unwrap() {
            assert_eq!(labels[&k], v);
        }

        let c = &pod.containers[0];
        assert_eq!(
            c.command.as_deref().unwrap(),
            [
                "/usr/local/bin/kube-proxy",
                "--config=/var/lib/kube-proxy/config.conf",
                "--hostname-override=$(NODE_NAME)",
            ]
        );
        let env = &c.env.as_ref().unwrap()[0];
        assert_eq!(env.name, "NODE_NAME");
        let field = env.value_from.as_ref().unwrap().field_ref.as_ref().unwrap();
        assert_eq!(field.field_path, "spec.nodeName");
        assert_eq!(c.security_context.as_ref().unwrap().privileged, Some(true));

        // Every mount has its volume, at the paths kube-proxy expects.
        let volumes = pod.volumes.unwrap();
        let mounts: Vec<_> = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| (m.mount_path.as_str(), m.read_only == Some(true)))
            .collect();
        assert_eq!(
            mounts,
            [
                ("/var/lib/kube-proxy", false),
                ("/run/xtables.lock", false),
                ("/lib/modules", true),
            ]
        );
        for m in c.volume_mounts.as_ref().unwrap() {
            assert!(volumes.iter().any(|v| v.name == m.name), "{}", m.name);
        }
        let xtables = volumes.iter().find(|v| v.name == "xtables-lock").unwrap();
        let host = xtables.host_path.as_ref().unwrap();
        assert_eq!(host.path, "/run/xtables.lock");
        assert_eq!(host.type_.as_deref(), Some("FileOrCreate"));
        let cm = volumes.iter().find(|v| v.name == "kube-proxy").unwrap();
        assert_eq!(cm.config_map.as_ref().unwrap().name, "kube-proxy");
    }
}
