//! flannel, the default pod network: the `kube-flannel` namespace, its
//! ServiceAccount and RBAC, the `kube-flannel-cfg` ConfigMap (CNI config
//! and network config) and the `kube-flannel-ds` DaemonSet, with the VXLAN
//! backend over the first pod network.
//!
//! This mirrors upstream's `kube-flannel.yml` with one difference: the CNI
//! config and the flannel CNI plugin are installed under
//! [`CNI_CONF_DIR`] and [`CNI_BIN_DIR`] rather than `/etc/cni/net.d` and
//! `/opt/cni/bin`, because Slate's root filesystem is read-only; Slate's
//! containerd looks for them there.
//!
//! flanneld takes each node's network from `node.spec.podCIDR`
//! (`--kube-subnet-mgr`), so the controller-manager must allocate them
//! (`--allocate-node-cidrs`).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, Container, EnvVar, Namespace, NodeAffinity, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, PodSpec, PodTemplateSpec, ResourceRequirements,
    SecurityContext, ServiceAccount, Toleration,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde_json::json;
use slate_config::MachineConfig;

use super::build::{
    config_map_volume, field_env, host_path, labeled, labels, mount, quantities,
    service_account_binding, strings, to_json,
};
use crate::manifest::meta;
use crate::{K8sError, Manifest, images};

/// Where the node's CNI configs are (containerd's `conf_dir`).
pub const CNI_CONF_DIR: &str = "/var/lib/cni/net.d";
/// Where the node's CNI plugins are (containerd's `bin_dir`).
pub const CNI_BIN_DIR: &str = "/var/lib/cni/bin";

const NAME: &str = "flannel";
const NAMESPACE: &str = "kube-flannel";
const CONFIG_MAP: &str = "kube-flannel-cfg";
/// Where the ConfigMap is mounted in the containers.
const CONFIG_DIR: &str = "/etc/kube-flannel/";
/// Upstream's `k8s-app: flannel`, on every object.
const APP_LABEL: (&str, &str) = ("k8s-app", NAME);

/// flannel's objects, in apply order: the namespace first, the RBAC and
/// config before the DaemonSet that uses them.
pub fn objects(config: &MachineConfig) -> Result<Vec<Manifest>, K8sError> {
    // flannel's pods are privileged in effect (host network, NET_ADMIN,
    // host paths), which the `baseline` and `restricted` levels refuse.
    let namespace = Namespace {
        metadata: labeled(
            meta(NAMESPACE, None),
            &[
                APP_LABEL,
                ("pod-security.kubernetes.io/enforce", "privileged"),
            ],
        ),
        ..Default::default()
    };
    let service_account = ServiceAccount {
        metadata: labeled(meta(NAME, Some(NAMESPACE)), &[APP_LABEL]),
        ..Default::default()
    };
    // flanneld reads its pod and node (the node's podCIDR) and records its
    // VXLAN endpoint in the node's annotations.
    let rule = |resource: &str, verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec![resource.to_owned()]),
        verbs: strings(verbs),
        ..Default::default()
    };
    let role = ClusterRole {
        metadata: labeled(meta(NAME, None), &[APP_LABEL]),
        rules: Some(vec![
            rule("pods", &["get"]),
            rule("nodes", &["get", "list", "watch"]),
            rule("nodes/status", &["patch"]),
        ]),
        ..Default::default()
    };
    let binding = service_account_binding(
        labeled(meta(NAME, None), &[APP_LABEL]),
        NAME,
        NAMESPACE,
        NAME,
    );
    let config_map = ConfigMap {
        metadata: labeled(
            meta(CONFIG_MAP, Some(NAMESPACE)),
            &[APP_LABEL, ("tier", "node"), ("app", NAME)],
        ),
        data: Some(BTreeMap::from([
            ("cni-conf.json".to_owned(), cni_conf()?),
            ("net-conf.json".to_owned(), net_conf(config)?),
        ])),
        ..Default::default()
    };
    Ok(vec![
        Manifest::of(&namespace)?,
        Manifest::of(&service_account)?,
        Manifest::of(&role)?,
        Manifest::of(&binding)?,
        Manifest::of(&config_map)?,
        Manifest::of(&daemon_set())?,
    ])
}

/// `cni-conf.json`, copied to the node as `10-flannel.conflist`: the
/// flannel plugin (which delegates to `bridge` with the node's subnet)
/// and `portmap` for pods' `hostPort`s.
fn cni_conf() -> Result<String, K8sError> {
    let conf = json!({
        "name": "cbr0",
        "cniVersion": "0.3.1",
        "plugins": [
            {
                "type": "flannel",
                "delegate": { "hairpinMode": true, "isDefaultGateway": true },
            },
            {
                "type": "portmap",
                "capabilities": { "portMappings": true },
            },
        ],
    });
    to_json("flannel cni-conf.json", &conf)
}

/// `net-conf.json`: the cluster's pod network, carried over VXLAN.
fn net_conf(config: &MachineConfig) -> Result<String, K8sError> {
    let network = config
        .cluster
        .network
        .pod_subnets
        .first()
        .ok_or_else(|| K8sError::config("cluster.network.podSubnets", "is empty"))?;
    let conf = json!({
        "Network": network,
        "EnableNFTables": false,
        "Backend": { "Type": "vxlan" },
    });
    to_json("flannel net-conf.json", &conf)
}

/// flanneld on every Linux node, after two init containers have put the
/// flannel CNI plugin and the CNI config on the node.
fn daemon_set() -> DaemonSet {
    let (run, run_mount) = host_path("run", "/run/flannel", None, "/run/flannel", false);
    let (cni_plugin, cni_plugin_mount) = host_path(
        "cni-plugin",
        CNI_BIN_DIR,
        Some("DirectoryOrCreate"),
        "/opt/cni/bin",
        false,
    );
    let (cni, cni_mount) = host_path(
        "cni",
        CNI_CONF_DIR,
        Some("DirectoryOrCreate"),
        "/etc/cni/net.d",
        false,
    );
    let (xtables, xtables_mount) = host_path(
        "xtables-lock",
        "/run/xtables.lock",
        Some("FileOrCreate"),
        "/run/xtables.lock",
        false,
    );
    let config_volume = config_map_volume("flannel-cfg", CONFIG_MAP);
    let config_mount = mount("flannel-cfg", CONFIG_DIR, false);
    // The images' paths are fixed; only the host side of the volumes is
    // Slate's.
    let install_plugin = Container {
        name: "install-cni-plugin".into(),
        image: Some(images::FLANNEL_CNI_PLUGIN.into()),
        command: Some(vec!["cp".into()]),
        args: Some(strings(&["-f", "/flannel", "/opt/cni/bin/flannel"])),
        volume_mounts: Some(vec![cni_plugin_mount]),
        ..Default::default()
    };
    let install_conf = Container {
        name: "install-cni".into(),
        image: Some(images::FLANNEL.into()),
        command: Some(vec!["cp".into()]),
        args: Some(strings(&[
            "-f",
            "/etc/kube-flannel/cni-conf.json",
            "/etc/cni/net.d/10-flannel.conflist",
        ])),
        volume_mounts: Some(vec![cni_mount, config_mount.clone()]),
        ..Default::default()
    };
    let flanneld = Container {
        name: "kube-flannel".into(),
        image: Some(images::FLANNEL.into()),
        command: Some(vec!["/opt/bin/flanneld".into()]),
        // Masquerade traffic leaving the pod network; take the node's
        // subnet from its podCIDR rather than from etcd.
        args: Some(strings(&["--ip-masq", "--kube-subnet-mgr"])),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&[("cpu", "100m"), ("memory", "50Mi")])),
            ..Default::default()
        }),
        // Not privileged: creating the VXLAN device, routes and iptables
        // rules needs only these two.
        security_context: Some(SecurityContext {
            privileged: Some(false),
            capabilities: Some(Capabilities {
                add: Some(strings(&["NET_ADMIN", "NET_RAW"])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        env: Some(vec![
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
            EnvVar {
                name: "EVENT_QUEUE_DEPTH".into(),
                value: Some("5000".into()),
                ..Default::default()
            },
        ]),
        volume_mounts: Some(vec![run_mount, config_mount, xtables_mount]),
        ..Default::default()
    };
    let linux_only = NodeSelectorTerm {
        match_expressions: Some(vec![NodeSelectorRequirement {
            key: "kubernetes.io/os".into(),
            operator: "In".into(),
            values: Some(vec!["linux".into()]),
        }]),
        ..Default::default()
    };
    let pod = PodSpec {
        affinity: Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![linux_only],
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        host_network: Some(true),
        priority_class_name: Some("system-node-critical".into()),
        // Pod networking must come up on every node, tainted or not.
        tolerations: Some(vec![Toleration {
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }]),
        service_account_name: Some(NAME.into()),
        init_containers: Some(vec![install_plugin, install_conf]),
        containers: vec![flanneld],
        volumes: Some(vec![run, cni_plugin, cni, config_volume, xtables]),
        ..Default::default()
    };
    let pod_labels = [("tier", "node"), ("app", NAME), APP_LABEL];
    DaemonSet {
        metadata: labeled(meta("kube-flannel-ds", Some(NAMESPACE)), &pod_labels),
        spec: DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(labels(&[("app", NAME), APP_LABEL])),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&pod_labels)),
                    ..Default::default()
                }),
                spec: Some(pod),
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

    fn data(config: &MachineConfig, key: &str) -> serde_json::Value {
        let cm: ConfigMap = typed(find(&objects(config).unwrap(), "ConfigMap"));
        serde_json::from_str(&cm.data.unwrap()[key]).unwrap()
    }

    fn pod() -> PodSpec {
        let ds: DaemonSet = typed(find(&objects(&config()).unwrap(), "DaemonSet"));
        ds.spec.template.spec.unwrap()
    }

    #[test]
    fn objects_come_in_apply_order_and_round_trip() {
        let objects = objects(&config()).unwrap();
        let kinds: Vec<_> = objects.iter().map(|m| m.describe()).collect();
        assert_eq!(
            kinds,
            [
                "Namespace kube-flannel",
                "ServiceAccount kube-flannel/flannel",
                "ClusterRole flannel",
                "ClusterRoleBinding flannel",
                "ConfigMap kube-flannel/kube-flannel-cfg",
                "DaemonSet kube-flannel/kube-flannel-ds",
            ]
        );
        let ns: Namespace = typed(&objects[0]);
        assert_eq!(
            ns.metadata.labels.unwrap()["pod-security.kubernetes.io/enforce"],
            "privileged"
        );
        let _: ServiceAccount = typed(&objects[1]);
        let role: ClusterRole = typed(&objects[2]);
        let rules: Vec<_> = role
            .rules
            .unwrap()
            .into_iter()
            .map(|r| (r.resources.unwrap().join(","), r.verbs.join(",")))
            .collect();
        assert_eq!(
            rules,
            [
                ("pods".to_owned(), "get".to_owned()),
                ("nodes".to_owned(), "get,list,watch".to_owned()),
                ("nodes/status".to_owned(), "patch".to_owned()),
            ]
        );
        let binding: ClusterRoleBinding = typed(&objects[3]);
        assert_eq!(binding.role_ref.name, "flannel");
        let subject = &binding.subjects.unwrap()[0];
        assert_eq!(subject.name, "flannel");
        assert_eq!(subject.namespace.as_deref(), Some("kube-flannel"));
        let _: ConfigMap = typed(&objects[4]);
        let _: DaemonSet = typed(&objects[5]);
    }

    #[test]
    fn network_is_the_first_pod_subnet() {
        let mut config = config();
        assert_eq!(data(&config, "net-conf.json")["Network"], "10.244.0.0/16");
        config.cluster.network.pod_subnets = vec!["10.42.0.0/16".into(), "fd00:42::/56".into()];
        let net = data(&config, "net-conf.json");
        assert_eq!(net["Network"], "10.42.0.0/16");
        assert_eq!(net["Backend"]["Type"], "vxlan");
        assert_eq!(net["EnableNFTables"], false);
    }

    #[test]
    fn no_pod_network_is_an_error() {
        let mut config = config();
        config.cluster.network.pod_subnets.clear();
        let err = objects(&config).unwrap_err();
        assert!(err.to_string().contains("podSubnets"), "{err}");
    }

    #[test]
    fn cni_conf_chains_flannel_and_portmap() {
        let conf = data(&config(), "cni-conf.json");
        assert_eq!(conf["name"], "cbr0");
        let plugins = conf["plugins"].as_array().unwrap();
        assert_eq!(plugins.len(), 2);
        assert_eq!(plugins[0]["type"], "flannel");
        assert_eq!(plugins[0]["delegate"]["hairpinMode"], true);
        assert_eq!(plugins[0]["delegate"]["isDefaultGateway"], true);
        assert_eq!(plugins[1]["type"], "portmap");
        assert_eq!(plugins[1]["capabilities"]["portMappings"], true);
    }

    #[test]
    fn cni_files_go_to_slates_writable_dirs() {
        let pod = pod();
        let volumes = pod.volumes.unwrap();
        let host = |name: &str| {
            let v = volumes.iter().find(|v| v.name == name).unwrap();
            v.host_path.as_ref().unwrap().path.clone()
        };
        assert_eq!(host("cni-plugin"), CNI_BIN_DIR);
        assert_eq!(host("cni"), CNI_CONF_DIR);
        assert_eq!(host("run"), "/run/flannel");
        assert_eq!(host("xtables-lock"), "/run/xtables.lock");
        assert!(!volumes.iter().any(|v| {
            v.host_path
                .as_ref()
                .is_some_and(|h| h.path.starts_with("/etc") || h.path.starts_with("/opt"))
        }));

        // The init containers copy into the mounts of those dirs.
        let init = pod.init_containers.unwrap();
        let copies: Vec<_> = init
            .iter()
            .map(|c| {
                let dest = c.args.as_ref().unwrap().last().unwrap().clone();
                let mount = c.volume_mounts.as_ref().unwrap()[0].clone();
                assert!(dest.starts_with(&mount.mount_path), "{dest}");
                (c.name.as_str(), c.image.clone().unwrap(), mount.name, dest)
            })
            .collect();
        assert_eq!(
            copies,
            [
                (
                    "install-cni-plugin",
                    images::FLANNEL_CNI_PLUGIN.to_owned(),
                    "cni-plugin".to_owned(),
                    "/opt/cni/bin/flannel".to_owned()
                ),
                (
                    "install-cni",
                    images::FLANNEL.to_owned(),
                    "cni".to_owned(),
                    "/etc/cni/net.d/10-flannel.conflist".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn flanneld_runs_on_every_linux_node() {
        let objects = objects(&config()).unwrap();
        let ds: DaemonSet = typed(find(&objects, "DaemonSet"));
        let template_labels = ds.spec.template.metadata.unwrap().labels.unwrap();
        for (k, v) in ds.spec.selector.match_labels.unwrap() {
            assert_eq!(template_labels[&k], v);
        }
        assert_eq!(template_labels["app"], "flannel");
        assert_eq!(template_labels["k8s-app"], "flannel");

        let pod = ds.spec.template.spec.unwrap();
        assert_eq!(pod.host_network, Some(true));
        assert_eq!(pod.service_account_name.as_deref(), Some("flannel"));
        assert_eq!(
            pod.priority_class_name.as_deref(),
            Some("system-node-critical")
        );
        let t = &pod.tolerations.unwrap()[0];
        assert_eq!(
            (t.operator.as_deref(), t.effect.as_deref(), t.key.as_deref()),
            (Some("Exists"), Some("NoSchedule"), None)
        );
        let terms = pod
            .affinity
            .unwrap()
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap()
            .node_selector_terms;
        let req = &terms[0].match_expressions.as_ref().unwrap()[0];
        assert_eq!(
            (req.key.as_str(), req.operator.as_str()),
            ("kubernetes.io/os", "In")
        );
        assert_eq!(req.values.as_deref().unwrap(), ["linux"]);

        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some(images::FLANNEL));
        assert_eq!(c.command.as_deref().unwrap(), ["/opt/bin/flanneld"]);
        assert_eq!(
            c.args.as_deref().unwrap(),
            ["--ip-masq", "--kube-subnet-mgr"]
        );
        let security = c.security_context.as_ref().unwrap();
        assert_eq!(security.privileged, Some(false));
        assert_eq!(
            security
                .capabilities
                .as_ref()
                .unwrap()
                .add
                .as_deref()
                .unwrap(),
            ["NET_ADMIN", "NET_RAW"]
        );
        let env: BTreeMap<_, _> = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| {
                let field = e
                    .value_from
                    .as_ref()
                    .and_then(|v| v.field_ref.as_ref())
                    .map(|f| f.field_path.clone());
                (e.name.as_str(), field.or_else(|| e.value.clone()).unwrap())
            })
            .collect();
        assert_eq!(env["POD_NAME"], "metadata.name");
        assert_eq!(env["POD_NAMESPACE"], "metadata.namespace");
        assert_eq!(env["EVENT_QUEUE_DEPTH"], "5000");
        let mounts: Vec<_> = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| (m.name.as_str(), m.mount_path.as_str()))
            .collect();
        assert_eq!(
            mounts,
            [
                ("run", "/run/flannel"),
                ("flannel-cfg", "/etc/kube-flannel/"),
                ("xtables-lock", "/run/xtables.lock"),
            ]
        );
        // Every mount of every container has its volume.
        let volumes = pod.volumes.unwrap();
        let all = pod
            .init_containers
            .unwrap()
            .into_iter()
            .chain(pod.containers);
        for m in all.flat_map(|c| c.volume_mounts.unwrap()) {
            assert!(volumes.iter().any(|v| v.name == m.name), "{}", m.name);
        }
        let cfg = volumes.iter().find(|v| v.name == "flannel-cfg").unwrap();
        assert_eq!(cfg.config_map.as_ref().unwrap().name, "kube-flannel-cfg");
    }
}
