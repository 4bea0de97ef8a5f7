//! CoreDNS, the cluster's DNS: its ServiceAccount and RBAC, the `coredns`
//! ConfigMap holding its Corefile, the `coredns` Deployment and the
//! `kube-dns` Service at the 10th address of the service network (the
//! address kubelet gives pods as their nameserver).
//!
//! This mirrors the manifest kubeadm deploys (its `coredns` add-on phase),
//! names and labels included, so that tools and runbooks written for
//! kubeadm clusters (`kubectl -n kube-system get pods -l k8s-app=kube-dns`)
//! work unchanged.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort,
    HTTPGetAction, KeyToPath, PodAffinityTerm, PodAntiAffinity, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec,
    Toleration, Volume, WeightedPodAffinityTerm,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use slate_config::MachineConfig;

use super::build::{labeled, labels, mount, quantities, service_account_binding, strings};
use crate::manifest::meta;
use crate::{K8sError, Manifest, images};

const NAME: &str = "coredns";
const NAMESPACE: &str = "kube-system";
/// The RBAC objects' name, kubeadm's.
const RBAC_NAME: &str = "system:coredns";
/// The label value CoreDNS's pods and Service share: kube-dns's, kept
/// when CoreDNS replaced it so that existing selectors still match.
const APP: &str = "kube-dns";
/// `k8s-app: kube-dns`, what the Deployment and the Service select.
const APP_LABEL: (&str, &str) = ("k8s-app", APP);
/// Where the Corefile is mounted in the container.
const CONFIG_DIR: &str = "/etc/coredns";

/// CoreDNS's objects, in apply order.
pub fn objects(config: &MachineConfig) -> Result<Vec<Manifest>, K8sError> {
    let service_account = ServiceAccount {
        metadata: meta(NAME, Some(NAMESPACE)),
        ..Default::default()
    };
    // The kubernetes plugin watches Services, EndpointSlices (and the
    // older Endpoints), pods (`pods insecure`) and namespaces.
    let rule = |group: &str, resources: &[&str]| PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(strings(resources)),
        verbs: strings(&["list", "watch"]),
        ..Default::default()
    };
    let role = ClusterRole {
        metadata: meta(RBAC_NAME, None),
        rules: Some(vec![
            rule("", &["endpoints", "services", "pods", "namespaces"]),
            rule("discovery.k8s.io", &["endpointslices"]),
        ]),
        ..Default::default()
    };
    let binding = service_account_binding(meta(RBAC_NAME, None), RBAC_NAME, NAMESPACE, NAME);
    let config_map = ConfigMap {
        metadata: meta(NAME, Some(NAMESPACE)),
        data: Some(BTreeMap::from([(
            "Corefile".to_owned(),
            corefile(&config.cluster.network.dns_domain),
        )])),
        ..Default::default()
    };
    Ok(vec![
        Manifest::of(&service_account)?,
        Manifest::of(&role)?,
        Manifest::of(&binding)?,
        Manifest::of(&config_map)?,
        Manifest::of(&deployment(config))?,
        Manifest::of(&service(config)?)?,
    ])
}

/// kubeadm's Corefile: answer for the cluster domain and reverse zones
/// from the API, forward the rest to the node's resolvers (the pod runs
/// with `dnsPolicy: Default`, so `/etc/resolv.conf` is the node's).
fn corefile(dns_domain: &str) -> String {
    format!(
        r".:53 {{
    errors
    health {{
       lameduck 5s
    }}
    ready
    kubernetes {dns_domain} in-addr.arpa ip6.arpa {{
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }}
    prometheus :9153
    forward . /etc/resolv.conf {{
       max_concurrent 1000
    }}
    cache 30
    loop
    reload
    loadbalance
}}
"
    )
}

/// Two CoreDNS replicas, spread over nodes when there are several, and
/// allowed on control-plane nodes so that DNS works before workers join.
fn deployment(config: &MachineConfig) -> Deployment {
    let image = images::or_default(config.cluster.core_dns.image.as_deref(), images::COREDNS);
    let http_probe = |path: &str, port: i32| HTTPGetAction {
        path: Some(path.into()),
        port: IntOrString::Int(port),
        scheme: Some("HTTP".into()),
        ..Default::default()
    };
    let container = Container {
        name: NAME.into(),
        image: Some(image),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(strings(&["-conf", &format!("{CONFIG_DIR}/Corefile")])),
        ports: Some(vec![
            container_port("dns", 53, "UDP"),
            container_port("dns-tcp", 53, "TCP"),
            container_port("metrics", 9153, "TCP"),
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&[("cpu", "100m"), ("memory", "70Mi")])),
            limits: Some(quantities(&[("memory", "170Mi")])),
            ..Default::default()
        }),
        liveness_probe: Some(Probe {
            http_get: Some(http_probe("/health", 8080)),
            initial_delay_seconds: Some(60),
            timeout_seconds: Some(5),
            success_threshold: Some(1),
            failure_threshold: Some(5),
            ..Default::default()
        }),
        readiness_probe: Some(Probe {
            http_get: Some(http_probe("/ready", 8181)),
            ..Default::default()
        }),
        // Binding port 53 is all CoreDNS needs from the kernel.
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                add: Some(strings(&["NET_BIND_SERVICE"])),
                drop: Some(strings(&["ALL"])),
            }),
            read_only_root_filesystem: Some(true),
            ..Default::default()
        }),
        volume_mounts: Some(vec![mount("config-volume", CONFIG_DIR, true)]),
        ..Default::default()
    };
    let anti_affinity = WeightedPodAffinityTerm {
        weight: 100,
        pod_affinity_term: PodAffinityTerm {
            label_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "k8s-app".into(),
                    operator: "In".into(),
                    values: Some(vec![APP.into()]),
                }]),
                ..Default::default()
            }),
            topology_key: "kubernetes.io/hostname".into(),
            ..Default::default()
        },
    };
    let pod = PodSpec {
        priority_class_name: Some("system-cluster-critical".into()),
        service_account_name: Some(NAME.into()),
        affinity: Some(Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![anti_affinity]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        tolerations: Some(vec![
            Toleration {
                key: Some("CriticalAddonsOnly".into()),
                operator: Some("Exists".into()),
                ..Default::default()
            },
            Toleration {
                key: Some("node-role.kubernetes.io/control-plane".into()),
                effect: Some("NoSchedule".into()),
                ..Default::default()
            },
        ]),
        node_selector: Some(labels(&[("kubernetes.io/os", "linux")])),
        containers: vec![container],
        // Resolve upstream names with the node's resolvers, not with
        // CoreDNS itself.
        dns_policy: Some("Default".into()),
        volumes: Some(vec![Volume {
            name: "config-volume".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: NAME.into(),
                items: Some(vec![KeyToPath {
                    key: "Corefile".into(),
                    path: "Corefile".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ..Default::default()
    };
    Deployment {
        metadata: labeled(meta(NAME, Some(NAMESPACE)), &[APP_LABEL]),
        spec: DeploymentSpec {
            replicas: Some(2),
            // One replica at a time, so that DNS never goes away in a
            // rollout.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(1)),
                    ..Default::default()
                }),
            }),
            selector: LabelSelector {
                match_labels: Some(labels(&[APP_LABEL])),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&[APP_LABEL])),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The `kube-dns` Service, at the address kubelet's `clusterDNS` names.
fn service(config: &MachineConfig) -> Result<Service, K8sError> {
    let cluster_ip = crate::addons::dns_service_ip(config)?.to_string();
    let port = |name: &str, port: i32, protocol: &str| ServicePort {
        name: Some(name.into()),
        port,
        protocol: Some(protocol.into()),
        target_port: Some(IntOrString::Int(port)),
        ..Default::default()
    };
    let mut metadata = labeled(
        meta("kube-dns", Some(NAMESPACE)),
        &[
            APP_LABEL,
            ("kubernetes.io/cluster-service", "true"),
            ("kubernetes.io/name", "CoreDNS"),
        ],
    );
    // Prometheus's Kubernetes service discovery scrapes CoreDNS's metrics.
    metadata.annotations = Some(labels(&[
        ("prometheus.io/port", "9153"),
        ("prometheus.io/scrape", "true"),
    ]));
    Ok(Service {
        metadata,
        spec: Some(ServiceSpec {
            cluster_ip: Some(cluster_ip),
            ports: Some(vec![
                port("dns", 53, "UDP"),
                port("dns-tcp", 53, "TCP"),
                port("metrics", 9153, "TCP"),
            ]),
            selector: Some(labels(&[APP_LABEL])),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn container_port(name: &str, port: i32, protocol: &str) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some(protocol.into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addons::testing::{config, find, typed};
    use k8s_openapi::api::rbac::v1::ClusterRoleBinding;

    fn service_of(config: &MachineConfig) -> ServiceSpec {
        let s: Service = typed(find(&objects(config).unwrap(), "Service"));
        s.spec.unwrap()
    }

    fn pod_of(config: &MachineConfig) -> PodSpec {
        let d: Deployment = typed(find(&objects(config).unwrap(), "Deployment"));
        d.spec.template.spec.unwrap()
    }

    #[test]
    fn objects_come_in_apply_order_and_round_trip() {
        let objects = objects(&config()).unwrap();
        let kinds: Vec<_> = objects.iter().map(|m| m.describe()).collect();
        assert_eq!(
            kinds,
            [
                "ServiceAccount kube-system/coredns",
                "ClusterRole system:coredns",
                "ClusterRoleBinding system:coredns",
                "ConfigMap kube-system/coredns",
                "Deployment kube-system/coredns",
                "Service kube-system/kube-dns",
            ]
        );
        let _: ServiceAccount = typed(&objects[0]);
        let role: ClusterRole = typed(&objects[1]);
        let rules = role.rules.unwrap();
        assert!(rules.iter().all(|r| r.verbs == ["list", "watch"]));
        let slices = rules
            .iter()
            .find(|r| r.api_groups.as_deref() == Some(&["discovery.k8s.io".to_owned()]))
            .unwrap();
        assert_eq!(slices.resources.as_deref().unwrap(), ["endpointslices"]);
        let binding: ClusterRoleBinding = typed(&objects[2]);
        assert_eq!(binding.role_ref.name, "system:coredns");
        assert_eq!(binding.subjects.unwrap()[0].name, "coredns");
        let _: ConfigMap = typed(&objects[3]);
        let _: Deployment = typed(&objects[4]);
        let _: Service = typed(&objects[5]);
    }

    #[test]
    fn service_is_at_the_tenth_address_of_the_service_network() {
        let mut config = config();
        assert_eq!(config.cluster.network.service_subnets[0], "10.96.0.0/12");
        let spec = service_of(&config);
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.10"));
        assert_eq!(spec.selector.unwrap()["k8s-app"], "kube-dns");
        let ports: Vec<_> = spec
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), p.port, p.protocol.unwrap()))
            .collect();
        assert_eq!(
            ports,
            [
                ("dns".to_owned(), 53, "UDP".to_owned()),
                ("dns-tcp".to_owned(), 53, "TCP".to_owned()),
                ("metrics".to_owned(), 9153, "TCP".to_owned()),
            ]
        );

        config.cluster.network.service_subnets = vec!["172.20.0.0/16".into()];
        assert_eq!(
            service_of(&config).cluster_ip.as_deref(),
            Some("172.20.0.10")
        );
    }

    #[test]
    fn no_service_network_is_an_error() {
        let mut config = config();
        config.cluster.network.service_subnets.clear();
        let err = objects(&config).unwrap_err();
        assert!(err.to_string().contains("serviceSubnets"), "{err}");
    }

    #[test]
    fn service_is_annotated_for_prometheus() {
        let objects = objects(&config()).unwrap();
        let s: Service = typed(find(&objects, "Service"));
        let annotations = s.metadata.annotations.unwrap();
        assert_eq!(annotations["prometheus.io/port"], "9153");
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        assert_eq!(s.metadata.labels.unwrap()["k8s-app"], "kube-dns");
    }

    #[test]
    fn corefile_serves_the_cluster_domain() {
        let mut config = config();
        config.cluster.network.dns_domain = "example.internal".into();
        let cm: ConfigMap = typed(find(&objects(&config).unwrap(), "ConfigMap"));
        let corefile = &cm.data.unwrap()["Corefile"];
        assert!(corefile.starts_with(".:53 {\n"));
        assert!(corefile.contains("    kubernetes example.internal in-addr.arpa ip6.arpa {\n"));
        assert!(corefile.contains("forward . /etc/resolv.conf {"));
        let lines: Vec<_> = corefile.lines().map(str::trim).collect();
        for plugin in [
            "errors",
            "ready",
            "cache 30",
            "loop",
            "reload",
            "loadbalance",
        ] {
            assert!(lines.contains(&plugin), "{plugin}");
        }
        // Every block is closed.
        assert_eq!(corefile.matches('{').count(), corefile.matches('}').count());
    }

    #[test]
    fn image_is_the_default_or_the_configured_one() {
        let mut config = config();
        let image = |c: &MachineConfig| pod_of(c).containers[0].image.clone().unwrap();
        assert_eq!(image(&config), images::COREDNS);
        config.cluster.core_dns.image = Some("mirror.example/coredns:v2".into());
        assert_eq!(image(&config), "mirror.example/coredns:v2");
    }

    #[test]
    fn deployment_is_kubeadms() {
        let objects = objects(&config()).unwrap();
        let d: Deployment = typed(find(&objects, "Deployment"));
        assert_eq!(d.spec.replicas, Some(2));
        let template_labels = d.spec.template.metadata.unwrap().labels.unwrap();
        for (k, v) in d.spec.selector.match_labels.unwrap() {
            assert_eq!(template_labels[&k], v);
        }
        let pod = d.spec.template.spec.unwrap();
        assert_eq!(
            pod.priority_class_name.as_deref(),
            Some("system-cluster-critical")
        );
        assert_eq!(pod.dns_policy.as_deref(), Some("Default"));
        assert_eq!(pod.service_account_name.as_deref(), Some("coredns"));
        let tolerations: Vec<_> = pod
            .tolerations
            .unwrap()
            .into_iter()
            .map(|t| (t.key.unwrap(), t.effect))
            .collect();
        assert_eq!(
            tolerations,
            [
                ("CriticalAddonsOnly".to_owned(), None),
                (
                    "node-role.kubernetes.io/control-plane".to_owned(),
                    Some("NoSchedule".to_owned())
                ),
            ]
        );
        let preferred = pod
            .affinity
            .unwrap()
            .pod_anti_affinity
            .unwrap()
            .preferred_during_scheduling_ignored_during_execution
            .unwrap();
        let term = &preferred[0].pod_affinity_term;
        assert_eq!(term.topology_key, "kubernetes.io/hostname");
        let expr = &term
            .label_selector
            .as_ref()
            .unwrap()
            .match_expressions
            .as_ref()
            .unwrap()[0];
        assert_eq!(
            (expr.key.as_str(), expr.values.as_deref().unwrap()),
            ("k8s-app", &["kube-dns".to_owned()][..])
        );

        let c = &pod.containers[0];
        assert_eq!(
            c.args.as_deref().unwrap(),
            ["-conf", "/etc/coredns/Corefile"]
        );
        let liveness = c
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(
            (liveness.path.as_deref(), &liveness.port),
            (Some("/health"), &IntOrString::Int(8080))
        );
        let readiness = c
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(
            (readiness.path.as_deref(), &readiness.port),
            (Some("/ready"), &IntOrString::Int(8181))
        );
        let security = c.security_context.as_ref().unwrap();
        let caps = security.capabilities.as_ref().unwrap();
        assert_eq!(caps.drop.as_deref().unwrap(), ["ALL"]);
        assert_eq!(caps.add.as_deref().unwrap(), ["NET_BIND_SERVICE"]);
        assert_eq!(security.read_only_root_filesystem, Some(true));
        let resources = c.resources.as_ref().unwrap();
        let requests = resources.requests.as_ref().unwrap();
        assert_eq!(requests["cpu"].0, "100m");
        assert_eq!(requests["memory"].0, "70Mi");
        assert_eq!(resources.limits.as_ref().unwrap()["memory"].0, "170Mi");
        let ports: Vec<_> = c
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| (p.name.as_deref().unwrap(), p.container_port))
            .collect();
        assert_eq!(ports, [("dns", 53), ("dns-tcp", 53), ("metrics", 9153)]);

        // The Corefile is mounted where `-conf` looks for it.
        let volume = &pod.volumes.unwrap()[0];
        assert_eq!(volume.config_map.as_ref().unwrap().name, "coredns");
        let mount = &c.volume_mounts.as_ref().unwrap()[0];
        assert_eq!(
            (mount.name.as_str(), mount.mount_path.as_str()),
            (volume.name.as_str(), "/etc/coredns")
        );
    }
}
