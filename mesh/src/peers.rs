//! From the records a node knows to the peers its device runs: pure
//! functions, so the rules are tested without a network.
//!
//! - A peer's **candidates** are the endpoints it published (its own
//!   addresses), then the endpoints other members saw it at (`seen`: its
//!   NAT mapping as they see it).
//! - Its **relays** are members this node reaches directly now whose
//!   records say they reach the peer directly.
//! - Its **allowed IPs** are its mesh address and the networks it
//!   publishes, less any network that holds one of this node's own
//!   addresses (a member must not be able to pull this node's own traffic
//!   into the mesh), any that overlaps the mesh prefix, and what the route
//!   filter leaves out. A network two peers publish goes to one: a peer
//!   that answers before one that does not, then the newest record (a
//!   node that came back with a new key wins over its old record).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use slate_discovery::record::{Record, Seen};

use super::device::{PERSISTENT_KEEPALIVE, PeerConfig};

/// Most candidate endpoints tried per peer.
pub const MAX_CANDIDATES: usize = 16;

/// The device's peers for `records` (this node's own record excluded by
/// key). `up_direct` holds the keys of peers this node reaches directly
/// now; `route` says whether a published network may be routed.
pub fn peer_configs(
    own_key: &[u8; 32],
    own_addresses: &[IpAddr],
    mesh_prefix: &IpNet,
    records: &[&Record],
    up_direct: &HashSet<[u8; 32]>,
    answering: &HashSet<[u8; 32]>,
    route: impl Fn(&IpNet) -> bool,
) -> Vec<PeerConfig> {
    let mut order: Vec<&Record> = records
        .iter()
        .copied()
        .filter(|r| r.public_key != *own_key)
        .collect();
    order.sort_by_key(|r| {
        (
            std::cmp::Reverse(answering.contains(&r.public_key)),
            std::cmp::Reverse(r.issued_ms),
            r.public_key,
        )
    });
    let mut claimed: HashSet<IpNet> = HashSet::new();
    order
        .into_iter()
        .map(|peer| {
            let mut endpoints: Vec<SocketAddr> = Vec::new();
            let seen_by_others = records
                .iter()
                .filter(|r| r.public_key != peer.public_key)
                .flat_map(|r| r.seen.iter())
                .filter(|s| s.public_key == peer.public_key)
                .map(|s| s.endpoint);
            for e in peer.endpoints.iter().copied().chain(seen_by_others) {
                if !endpoints.contains(&e) && endpoints.len() < MAX_CANDIDATES {
                    endpoints.push(e);
                }
            }
            let relays = records
                .iter()
                .filter(|r| r.public_key != peer.public_key && r.public_key != *own_key)
                .filter(|r| up_direct.contains(&r.public_key))
                .filter(|r| r.seen.iter().any(|s| s.public_key == peer.public_key))
                .map(|r| r.public_key)
                .collect();
            let mut allowed_ips = vec![IpNet::from(IpAddr::V6(peer.mesh_address))];
            for net in peer.networks.iter().map(IpNet::trunc) {
                let usable = !own_addresses.iter().any(|a| net.contains(a))
                    && !mesh_prefix.contains(&net)
                    && !net.contains(mesh_prefix)
                    && route(&net);
                if usable && claimed.insert(net) {
                    allowed_ips.push(net);
                }
            }
            PeerConfig {
                public_key: peer.public_key,
                endpoints,
                allowed_ips,
                persistent_keepalive: Some(PERSISTENT_KEEPALIVE),
                relays,
            }
        })
        .collect()
}

/// What this node says it sees: peers up directly, at their source
/// endpoint, at most `max`.
pub fn seen(direct: impl IntoIterator<Item = ([u8; 32], SocketAddr)>, max: usize) -> Vec<Seen> {
    let mut seen: Vec<Seen> = direct
        .into_iter()
        .map(|(public_key, endpoint)| Seen {
            public_key,
            endpoint,
        })
        .collect();
    // A stable order, so an unchanged view makes an unchanged record.
    seen.sort_by_key(|s| s.public_key);
    seen.truncate(max);
    seen
}

/// The endpoints a node publishes: each usable address of its own at the
/// mesh port. Loopback, link-local, multicast and the mesh's own
/// addresses are left out.
pub fn own_endpoints(addresses: &[IpAddr], mesh_prefix: &IpNet, port: u16) -> Vec<SocketAddr> {
    addresses
        .iter()
        .filter(|a| is_reachable_unicast(a) && !mesh_prefix.contains(*a))
        .map(|a| SocketAddr::new(*a, port))
        .take(slate_discovery::record::MAX_ENDPOINTS)
        .collect()
}

fn is_reachable_unicast(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => {
            !(v4.is_loopback() || v4.is_link_local() || v4.is_multicast() || v4.is_unspecified())
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_multicast()
                || v6.is_unspecified()
                || v6.is_unicast_link_local())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: u8, endpoints: &[&str], networks: &[&str], seen: &[(u8, &str)]) -> Record {
        Record {
            node_id: format!("n{key}"),
            hostname: format!("n{key}"),
            public_key: [key; 32],
            mesh_address: format!("fd00::{key}").parse().unwrap(),
            endpoints: endpoints.iter().map(|e| e.parse().unwrap()).collect(),
            networks: networks.iter().map(|n| n.parse().unwrap()).collect(),
            control_plane: None,
            seen: seen
                .iter()
                .map(|(k, e)| Seen {
                    public_key: [*k; 32],
                    endpoint: e.parse().unwrap(),
                })
                .collect(),
            issued_ms: 1,
            ttl_secs: 60,
        }
    }

    #[test]
    fn candidates_relays_and_allowed_ips() {
        let own = record(1, &["198.51.100.11:51820"], &["198.51.100.11/32"], &[]);
        // 2 is behind NAT: 3 saw it at its mapping, and reaches it.
        let natted = record(2, &["10.20.0.2:51820"], &["10.20.0.2/32", "0.0.0.0/0"], &[]);
        let other = record(3, &["198.51.100.12:51820"], &[], &[(2, "192.0.2.2:40000")]);
        let records = [&own, &natted, &other];
        let up = HashSet::from([[3; 32]]);
        let own_addrs = ["198.51.100.11".parse().unwrap()];
        let mesh: IpNet = "fd00::/64".parse().unwrap();
        let none = HashSet::new();
        let peers = peer_configs(&[1; 32], &own_addrs, &mesh, &records, &up, &up, |_| true);
        assert_eq!(peers.len(), 2, "own record is no peer");
        let p2 = peers.iter().find(|p| p.public_key == [2; 32]).unwrap();
        assert_eq!(
            p2.endpoints,
            vec![
                "10.20.0.2:51820".parse().unwrap(),
                "192.0.2.2:40000".parse().unwrap()
            ]
        );
        assert_eq!(p2.relays, vec![[3; 32]]);
        // The default route holds this node's own address: refused.
        let nets: Vec<String> = p2.allowed_ips.iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["fd00::2/128", "10.20.0.2/32"]);
        // 3 is not up: no relay through it.
        let peers = peer_configs(&[1; 32], &own_addrs, &mesh, &records, &none, &none, |_| {
            true
        });
        assert!(peers.iter().all(|p| p.relays.is_empty()));
        // The route filter.
        let peers = peer_configs(&[1; 32], &own_addrs, &mesh, &records, &up, &up, |n| {
            n.prefix_len() > 32
        });
        let p2 = peers.iter().find(|p| p.public_key == [2; 32]).unwrap();
        assert_eq!(p2.allowed_ips.len(), 1);
    }

    #[test]
    fn a_contested_network_goes_to_the_peer_that_answers_then_the_newest() {
        let mesh: IpNet = "fd00::/64".parse().unwrap();
        let mut old = record(2, &[], &["10.9.0.5/32", "fd00::99/128"], &[]);
        old.issued_ms = 1;
        let mut new = record(3, &[], &["10.9.0.5/32"], &[]);
        new.issued_ms = 2;
        let holder = |answering: &HashSet<[u8; 32]>| {
            let peers = peer_configs(
                &[1; 32],
                &[],
                &mesh,
                &[&old, &new],
                answering,
                answering,
                |_| true,
            );
            // The mesh prefix is never a member's to claim.
            assert!(
                peers
                    .iter()
                    .all(|p| !p.allowed_ips.contains(&"fd00::99/128".parse().unwrap()))
            );
            peers
                .iter()
                .filter(|p| p.allowed_ips.contains(&"10.9.0.5/32".parse().unwrap()))
                .map(|p| p.public_key)
                .collect::<Vec<_>>()
        };
        assert_eq!(holder(&HashSet::new()), vec![[3; 32]], "the newest record");
        assert_eq!(
            holder(&HashSet::from([[2; 32]])),
            vec![[2; 32]],
            "the peer that answers"
        );
    }

    #[test]
    fn own_endpoints_skip_unusable_addresses() {
        let addrs: Vec<IpAddr> = [
            "127.0.0.1",
            "169.254.1.1",
            "fe80::1",
            "fd00::5",
            "10.0.0.5",
            "2001:db8::5",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let eps = own_endpoints(&addrs, &"fd00::/64".parse().unwrap(), 51820);
        let eps: Vec<String> = eps.iter().map(ToString::to_string).collect();
        assert_eq!(eps, ["10.0.0.5:51820", "[2001:db8::5]:51820"]);
    }

    #[test]
    fn seen_is_sorted_and_bounded() {
        let s = seen(
            [
                ([5; 32], "10.0.0.5:1".parse().unwrap()),
                ([4; 32], "10.0.0.4:1".parse().unwrap()),
            ],
            1,
        );
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].public_key, [4; 32]);
    }
}
