//! What the machine config asks of the mesh ([`MeshSettings`], derived once
//! per config change from networkd's feed), and the pod-network policy that
//! follows from it.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use slate_common::constants::DISCOVERY_PORT;
use slate_common::hostport::HostPort as Target;
use slate_config::{MachineConfig, MeshBackend};

/// What the machine config asks of the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshSettings {
    pub cluster_id: String,
    pub secret: String,
    pub discovery: Option<String>,
    /// The control-plane endpoint's host, when it is an address: asked
    /// for records while no peer answers.
    pub seed: Option<IpAddr>,
    pub control_plane: bool,
    pub hostname: String,
    pub route_filter: Vec<String>,
    /// Whether the API balancer runs, and wants control-plane endpoints.
    pub api_balancer: bool,
    pub backend: MeshBackend,
    /// The cluster's pod subnets, within which this node's own pod
    /// networks are looked for; and whether it publishes them (and routes
    /// others' into the mesh: both ends must, or the receiving end drops
    /// pod traffic from a peer whose pod network it does not know).
    pub pod_subnets: Vec<IpNet>,
    pub advertise_pods: bool,
}

impl MeshSettings {
    /// `cluster.mesh` and what the mesh needs besides; `None` when the
    /// mesh is off (or the config lacks the cluster's id and secret).
    pub fn from_config(config: Option<&MachineConfig>) -> Option<MeshSettings> {
        let config = config?;
        let mesh = &config.cluster.mesh;
        if !mesh.enabled {
            return None;
        }
        let endpoint =
            Target::from_https_url(&config.cluster.control_plane.endpoint, Some(443)).ok();
        let seed = endpoint.as_ref().and_then(|t| t.host.parse().ok());
        let discovery = mesh
            .discovery
            .endpoint
            .clone()
            .or_else(|| endpoint.as_ref().map(default_discovery));
        Some(MeshSettings {
            cluster_id: config.cluster.id.clone()?,
            secret: config.cluster.secret.clone()?,
            discovery,
            seed,
            control_plane: config.machine.kind == slate_config::MachineType::Controlplane,
            hostname: config.machine.network.hostname.clone().unwrap_or_default(),
            route_filter: mesh.route_filter.clone(),
            api_balancer: config.cluster.api_balancer.enabled,
            backend: mesh.backend,
            // Validated with the config: a bad entry never gets here.
            pod_subnets: config
                .cluster
                .network
                .pod_subnets
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect(),
            advertise_pods: mesh.advertise_pod_networks,
        })
    }
}

/// This node's pod networks: the networks of its addresses that lie in
/// one of the cluster's pod subnets (a bridge CNI's gateway address,
/// `10.244.3.1/24` on `cni0`, names the node's `10.244.3.0/24`). A
/// host-length address (Cilium's on `cilium_host`) names no network.
pub(crate) fn pod_networks(
    addresses: impl Iterator<Item = IpNet>,
    pod_subnets: &[IpNet],
) -> Vec<IpNet> {
    let mut nets: Vec<IpNet> = addresses
        .filter(|a| a.prefix_len() < a.max_prefix_len())
        .map(|a| a.trunc())
        .filter(|net| pod_subnets.iter().any(|pods| pods.contains(net)))
        .collect();
    nets.sort();
    nets.dedup();
    nets
}

/// Which of a peer's networks may be routed, as far as pods go.
pub(crate) struct PodPolicy<'a> {
    /// This node's own pod networks.
    pub own: &'a [IpNet],
    /// The cluster's pod subnets.
    pub subnets: &'a [IpNet],
    /// Whether this node publishes its pod networks.
    pub advertise: bool,
}

impl PodPolicy<'_> {
    /// A claim that overlaps this node's own pod network would take the
    /// local pods' traffic into the mesh: never. Peers' pod networks go
    /// into the mesh only when this node publishes its own (else the
    /// peer, not knowing this node's pods, would drop their answers).
    pub fn allows(&self, net: &IpNet) -> bool {
        let overlaps_own = self.own.iter().any(|p| p.contains(net) || net.contains(p));
        let a_pod_network = self.subnets.iter().any(|p| p.contains(net));
        !overlaps_own && (self.advertise || !a_pod_network)
    }
}

/// The service the control-plane nodes run, at the control-plane
/// endpoint's host (an address or a name).
fn default_discovery(endpoint: &Target) -> String {
    match endpoint.host.parse::<IpAddr>() {
        Ok(ip) => format!("http://{}", SocketAddr::new(ip, DISCOVERY_PORT)),
        Err(_) => format!("http://{}:{DISCOVERY_PORT}", endpoint.host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_discovery_service_is_at_the_control_plane_host() {
        let url = |e: &str| default_discovery(&Target::from_https_url(e, Some(443)).unwrap());
        assert_eq!(url("https://10.0.0.1:6443"), "http://10.0.0.1:3000");
        assert_eq!(url("https://[fd00::1]:6443"), "http://[fd00::1]:3000");
        assert_eq!(
            url("https://cp.example.com:6443"),
            "http://cp.example.com:3000"
        );
    }

    #[test]
    fn pod_networks_are_the_networks_of_addresses_in_the_pod_subnets() {
        let nets = |v: &[&str]| -> Vec<IpNet> { v.iter().map(|s| s.parse().unwrap()).collect() };
        let addresses = nets(&[
            "10.244.3.1/24",  // cni0
            "10.244.3.1/24",  // the same network twice
            "10.244.7.9/32",  // cilium_host: no network
            "192.168.1.5/24", // the node's LAN
            "fd00:10::1/64",  // outside the IPv6 pod subnet
            "fd00:244:0:3::1/64",
        ]);
        let pods = nets(&["10.244.0.0/16", "fd00:244::/48"]);
        assert_eq!(
            pod_networks(addresses.iter().copied(), &pods),
            nets(&["10.244.3.0/24", "fd00:244:0:3::/64"])
        );
        assert!(pod_networks(addresses.into_iter(), &[]).is_empty());
    }

    #[test]
    fn peers_pod_networks_are_routed_only_by_nodes_that_publish_their_own() {
        let net = |s: &str| -> IpNet { s.parse().unwrap() };
        let (own, subnets) = ([net("10.244.3.0/24")], [net("10.244.0.0/16")]);
        let on = PodPolicy {
            own: &own,
            subnets: &subnets,
            advertise: true,
        };
        let off = PodPolicy {
            advertise: false,
            ..on
        };
        for policy in [&on, &off] {
            assert!(policy.allows(&net("192.168.1.7/32")), "node IPs always");
            assert!(!policy.allows(&net("10.244.3.0/24")), "never our own");
            assert!(!policy.allows(&net("10.244.0.0/16")), "nor over it");
        }
        assert!(on.allows(&net("10.244.4.0/24")));
        assert!(!off.allows(&net("10.244.4.0/24")));
    }
}
