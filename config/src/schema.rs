//! The machine config schema, `version: v1alpha1`.
//!
//! Every field is documented here; `docs/config.md` is the user's
//! copy of these comments. Unknown fields are errors everywhere, so a typo
//! never silently does nothing. Empty and default fields are left out when a
//! config is written, which keeps generated configs short.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use crate::kubernetes::*;

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MachineConfig {
    /// Schema version; must be `v1alpha1`.
    pub version: String,
    /// This node: its role, identity, network, disks and kubelet.
    pub machine: Machine,
    /// What every node of the cluster shares.
    pub cluster: Cluster,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MachineType {
    /// Runs etcd and the Kubernetes control plane, and kubelet.
    Controlplane,
    /// Runs kubelet and workloads.
    Worker,
}

impl fmt::Display for MachineType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Controlplane => "controlplane",
            Self::Worker => "worker",
        })
    }
}

/// The half of the config that belongs to this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Machine {
    /// Role of the node in the cluster: `controlplane` or `worker`.
    #[serde(rename = "type")]
    pub kind: MachineType,
    /// Bootstrap token that lets nodes join the cluster, `[a-z0-9]{6}.[a-z0-9]{16}`.
    pub token: String,
    /// The machine (OS) CA: apid's server certificate is issued from it and
    /// client certificates are checked against it.
    pub ca: PemKeyPair,
    /// Extra names and addresses for apid's server certificate (besides the
    /// node's own addresses, its hostname and loopback).
    #[serde(rename = "certSANs", default, skip_serializing_if = "Vec::is_empty")]
    pub cert_sans: Vec<String>,
    /// Links, addresses, routes, DNS and the hostname.
    #[serde(default, skip_serializing_if = "is_default")]
    pub network: Network,
    /// Time synchronisation.
    #[serde(default, skip_serializing_if = "is_default")]
    pub time: Time,
    /// Where Slate is installed.
    #[serde(default, skip_serializing_if = "is_default")]
    pub install: Install,
    /// How kubelet runs.
    #[serde(default, skip_serializing_if = "is_default")]
    pub kubelet: Kubelet,
}

/// A certificate and, where this node may sign with it, its private key.
/// Both are base64-encoded PEM, as in Talos configs.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PemKeyPair {
    /// The certificate, base64 of its PEM text.
    pub crt: String,
    /// The private key, base64 of its PEM text; only where the node signs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl fmt::Debug for PemKeyPair {
    // Never print private keys, not even in debug logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PemKeyPair")
            .field("crt", &self.crt)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Network {
    /// Hostname of the node; by default from DHCP, else derived from the MAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Links to configure. Links not named here are left down, except the
    /// first Ethernet link, which gets DHCP when this list is empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// DNS servers (IP addresses); they take precedence over DHCP's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// DNS search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search_domains: Vec<String>,
}

/// One link and what goes on it. Name it with `interface`, or pick it by
/// hardware with `deviceSelector` (names differ between clouds and racks).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Interface {
    /// Link name, e.g. `eth0`, `bond0`, `br0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Picks the link by hardware instead of by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_selector: Option<DeviceSelector>,
    /// Run the DHCPv4 client on this link.
    #[serde(default, skip_serializing_if = "is_default")]
    pub dhcp: bool,
    /// Run the DHCPv6 client on this link (addresses and DNS; SLAAC from
    /// router advertisements is the kernel's, always on).
    #[serde(default, skip_serializing_if = "is_default")]
    pub dhcp6: bool,
    /// Static addresses in CIDR notation, e.g. `10.0.0.5/24`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Static routes through this link.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// Link MTU in bytes (68–65535).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// 802.1Q VLANs on top of this link.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vlans: Vec<Vlan>,
    /// Makes this link a bond of other links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bond: Option<Bond>,
    /// Makes this link a bridge over other links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<Bridge>,
    /// Creates this link as a dummy link.
    #[serde(default, skip_serializing_if = "is_default")]
    pub dummy: bool,
    /// Leave this link alone entirely.
    #[serde(default, skip_serializing_if = "is_default")]
    pub ignore: bool,
}

/// Hardware properties a link must all have to be selected.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeviceSelector {
    /// MAC address, `aa:bb:cc:dd:ee:ff`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_addr: Option<String>,
    /// Kernel driver, e.g. `virtio_net`, `ixgbe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Bus path, e.g. `0000:00:03.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus_path: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Route {
    /// Destination in CIDR notation; `0.0.0.0/0` is the default route.
    pub network: String,
    /// Next hop; it must be inside one of the link's subnets. Without it the
    /// route is on-link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Route metric; lower wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Vlan {
    /// VLAN id, 1–4094.
    pub vlan_id: u16,
    /// Run the DHCPv4 client on the VLAN link.
    #[serde(default, skip_serializing_if = "is_default")]
    pub dhcp: bool,
    /// Run the DHCPv6 client on the VLAN link.
    #[serde(default, skip_serializing_if = "is_default")]
    pub dhcp6: bool,
    /// Static addresses in CIDR notation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Static routes through the VLAN link.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// MTU of the VLAN link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Bond {
    /// Member links by name.
    pub interfaces: Vec<String>,
    /// Bonding mode.
    #[serde(default)]
    pub mode: BondMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BondMode {
    /// One member carries traffic, another takes over when it fails.
    #[default]
    #[serde(rename = "active-backup")]
    ActiveBackup,
    /// LACP link aggregation (needs switch support).
    #[serde(rename = "802.3ad")]
    Lacp,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Bridge {
    /// Member links by name.
    pub interfaces: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Time {
    /// Turn time synchronisation off (the clock is then never stepped).
    #[serde(default, skip_serializing_if = "is_default")]
    pub disabled: bool,
    /// NTP servers (host names or addresses). None by default: the node
    /// does not reach out to a public pool unless told to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Install {
    /// Disk to install to, e.g. `/dev/vda`. Required on bare metal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    /// Wipe the whole disk before installing, even if it holds other data.
    #[serde(default, skip_serializing_if = "is_default")]
    pub wipe: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Kubelet {
    /// The kubelet to run: a path inside the image's extensions. By default
    /// the kubelet extension the image was built with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Extra kubelet flags, without the leading `--`: `{max-pods: "250"}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_args: BTreeMap<String, String>,
    /// Which of the node's addresses kubelet reports.
    #[serde(rename = "nodeIP", default, skip_serializing_if = "is_default")]
    pub node_ip: NodeIp,
    /// Where to download kubelet from when the image carries none: the
    /// node fetches it onto EPHEMERAL and runs it only if its SHA-256 is
    /// the one given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<KubeletSource>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeletSource {
    /// `https://` or `http://` URL of the kubelet binary, e.g.
    /// `https://dl.k8s.io/release/v1.37.0/bin/linux/amd64/kubelet`.
    pub url: String,
    /// Its SHA-256, 64 hex digits (the release's `kubelet.sha256`).
    pub sha256: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeIp {
    /// Subnets (CIDR) the node IP is picked from; `!CIDR` excludes one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub valid_subnets: Vec<String>,
}

/// The half of the config shared by every node of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Cluster {
    /// Cluster identity (base64, 32 bytes); the mesh derives addresses from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Shared secret (base64, 32 bytes); the mesh seals discovery records
    /// with a key derived from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Cluster name (a-z, 0-9, `-`).
    pub name: String,
    /// Where the Kubernetes API is.
    pub control_plane: ControlPlane,
    /// Kubernetes cluster CA; its key only on control-plane nodes.
    pub ca: PemKeyPair,
    /// Pod and service networks.
    #[serde(default)]
    pub network: ClusterNetwork,
    /// etcd, on control-plane nodes.
    #[serde(default, skip_serializing_if = "is_default")]
    pub etcd: Etcd,
    /// The encrypted WireGuard mesh between all nodes.
    #[serde(default, skip_serializing_if = "is_default")]
    pub mesh: Mesh,
    /// The local Kubernetes API load balancer on every node.
    #[serde(default, skip_serializing_if = "is_default")]
    pub api_balancer: ApiBalancer,
    /// The front-proxy (aggregation layer) CA; control-plane nodes only,
    /// with its key.
    #[serde(
        rename = "aggregatorCA",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub aggregator_ca: Option<PemKeyPair>,
    /// The service-account token signing key; control-plane nodes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<ServiceAccount>,
    /// kube-apiserver, a static pod on control-plane nodes.
    #[serde(default, skip_serializing_if = "is_default")]
    pub api_server: ApiServer,
    /// kube-controller-manager, a static pod on control-plane nodes.
    #[serde(default, skip_serializing_if = "is_default")]
    pub controller_manager: Component,
    /// kube-scheduler, a static pod on control-plane nodes.
    #[serde(default, skip_serializing_if = "is_default")]
    pub scheduler: Component,
    /// kube-proxy, a DaemonSet applied once the API answers.
    #[serde(default, skip_serializing_if = "is_default")]
    pub proxy: Addon,
    /// CoreDNS, applied once the API answers.
    #[serde(rename = "coreDNS", default, skip_serializing_if = "is_default")]
    pub core_dns: Addon,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ControlPlane {
    /// URL of the Kubernetes API, `https://HOST:PORT`.
    pub endpoint: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterNetwork {
    /// Pod networks (CIDR).
    pub pod_subnets: Vec<String>,
    /// Service networks (CIDR).
    pub service_subnets: Vec<String>,
    /// DNS domain of the cluster's services.
    #[serde(default = "default_dns_domain")]
    pub dns_domain: String,
    /// The pod network deployed with the cluster.
    #[serde(default, skip_serializing_if = "is_default")]
    pub cni: Cni,
}

fn default_dns_domain() -> String {
    "cluster.local".into()
}

impl Default for ClusterNetwork {
    fn default() -> Self {
        Self {
            pod_subnets: vec!["10.244.0.0/16".into()],
            service_subnets: vec!["10.96.0.0/12".into()],
            dns_domain: default_dns_domain(),
            cni: Cni::default(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Etcd {
    /// The etcd CA; control-plane nodes need its key to issue peer and
    /// client certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PemKeyPair>,
    /// Extra etcd flags, without the leading `--`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_args: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mesh {
    /// Turn the mesh on (needs `cluster.id` and `cluster.secret`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub enabled: bool,
    /// Where nodes publish and find their sealed records.
    #[serde(default, skip_serializing_if = "is_default")]
    pub discovery: Discovery,
    /// `userspace` (boringtun, always works; relays and gossip) or
    /// `kernel` (the kernel's WireGuard, faster; no relay).
    #[serde(default, skip_serializing_if = "is_default")]
    pub backend: MeshBackend,
    /// Which peer networks go through the mesh: `CIDR` to route only
    /// what lies within, `!CIDR` to leave out; empty routes all. Mesh
    /// addresses always do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route_filter: Vec<String>,
    /// Publish this node's pod networks, so that peers route pod traffic
    /// to them through the mesh directly rather than through the CNI's
    /// own overlay (which the mesh carries anyway, between node IPs).
    /// A pod network is the network of an address on this node that lies
    /// in `cluster.network.podSubnets`: the gateway address bridge CNIs
    /// (bridge, flannel, kube-router) give their bridge. A node routes
    /// peers' pod networks into the mesh only with this on, so set it on
    /// every node. Off by default, as Talos's `advertiseKubernetesNetworks`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub advertise_pod_networks: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MeshBackend {
    /// WireGuard in networkd (boringtun): works on any kernel.
    #[default]
    Userspace,
    /// The kernel's WireGuard, configured over netlink.
    Kernel,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Discovery {
    /// Discovery service URL (`http://` or `https://`); by default the one
    /// the control-plane nodes run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiBalancer {
    /// Turn the balancer on; kubelet then reaches the API through it.
    #[serde(default)]
    pub enabled: bool,
    /// Port on 127.0.0.1.
    #[serde(default = "default_balancer_port")]
    pub port: u16,
}

fn default_balancer_port() -> u16 {
    7445
}

impl Default for ApiBalancer {
    fn default() -> Self {
        Self {
            enabled: false,
            port: default_balancer_port(),
        }
    }
}
