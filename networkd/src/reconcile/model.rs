//! What the node's links, addresses and routes should be, what they are,
//! and the operations that take one to the other. Pure: no netlink here,
//! so the planning is unit-tested without a kernel.

use std::collections::{BTreeMap, BTreeSet};

pub use slate_netlink::model::{Actual, ActualLink, Addr, DesiredLink, Kind, Op, RouteSpec};

/// The route metric networkd uses when the config names none. Always sent
/// explicitly: the kernel reports IPv4 routes without a metric as 0 and
/// IPv6 ones as 1024, and a comparison must not depend on that.
pub const DEFAULT_METRIC: u32 = 1024;

/// The state the config asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub links: Vec<DesiredLink>,
    pub addresses: BTreeSet<Addr>,
    pub routes: BTreeSet<RouteSpec>,
    /// Interfaces the config names that no link matches (yet).
    pub missing: Vec<String>,
}

/// The operations that take `actual` to `desired`. `owned` are the
/// addresses networkd added earlier: only those are ever removed (routes
/// are recognised by their protocol number instead). Nothing to do gives
/// an empty plan, so a second pass after a successful one writes nothing.
pub fn plan(desired: &Desired, actual: &Actual, owned: &BTreeSet<Addr>) -> Vec<Op> {
    let mut ops = Vec::new();
    // Links networkd creates: bonds, bridges and dummies first, VLANs after,
    // since a VLAN may sit on a bond created in the same pass.
    let mut creates: Vec<&DesiredLink> = desired
        .links
        .iter()
        .filter(|l| l.kind != Kind::Existing && actual.link(&l.name).is_none())
        .collect();
    creates.sort_by_key(|l| matches!(l.kind, Kind::Vlan { .. }));
    ops.extend(creates.into_iter().cloned().map(Op::CreateLink));

    let index_of: BTreeMap<&str, u32> = actual
        .links
        .iter()
        .map(|l| (l.name.as_str(), l.index))
        .collect();
    for want in &desired.links {
        let have = actual.link(&want.name);
        if let Some(controller) = &want.controller {
            let current = have.and_then(|h| h.controller);
            if current.is_none() || current != index_of.get(controller.as_str()).copied() {
                ops.push(Op::SetController {
                    ifname: want.name.clone(),
                    controller: controller.clone(),
                });
            }
        }
        if let Some(mtu) = want.mtu
            && have.and_then(|h| h.mtu) != Some(mtu)
        {
            ops.push(Op::SetMtu {
                ifname: want.name.clone(),
                mtu,
            });
        }
        if !have.is_some_and(|h| h.up) {
            ops.push(Op::SetUp {
                ifname: want.name.clone(),
            });
        }
    }

    // Old routes first (removing an address takes the routes through it
    // along); new addresses before old ones go, so a link never loses its
    // last address, and its routes, on the way from one to the other.
    for route in &actual.routes {
        if !desired.routes.contains(route) {
            ops.push(Op::DelRoute(route.clone()));
        }
    }
    for addr in &desired.addresses {
        if !actual.addresses.contains(addr) {
            ops.push(Op::AddAddress(addr.clone()));
        }
    }
    for addr in owned {
        if !desired.addresses.contains(addr) && actual.addresses.contains(addr) {
            ops.push(Op::DelAddress(addr.clone()));
        }
    }
    for route in &desired.routes {
        if !actual.routes.contains(route) {
            ops.push(Op::AddRoute(route.clone()));
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str) -> ActualLink {
        ActualLink {
            index,
            name: name.into(),
            info_kind: None,
            mtu: Some(1500),
            up: true,
            controller: None,
            mac: format!("52:54:00:00:00:{index:02x}"),
            driver: None,
            bus_paths: vec![],
        }
    }

    fn addr(ifname: &str, net: &str) -> Addr {
        Addr {
            ifname: ifname.into(),
            net: net.parse().unwrap(),
        }
    }

    fn route(ifname: &str, dst: &str, gw: &str) -> RouteSpec {
        RouteSpec {
            ifname: ifname.into(),
            dst: dst.parse().unwrap(),
            gateway: Some(gw.parse().unwrap()),
            metric: DEFAULT_METRIC,
        }
    }

    fn desired() -> Desired {
        Desired {
            links: vec![
                DesiredLink {
                    name: "eth0".into(),
                    kind: Kind::Existing,
                    mtu: Some(9000),
                    controller: None,
                },
                DesiredLink {
                    name: "eth0.10".into(),
                    kind: Kind::Vlan {
                        parent: "eth0".into(),
                        id: 10,
                    },
                    mtu: None,
                    controller: None,
                },
                DesiredLink {
                    name: "bond0".into(),
                    kind: Kind::Bond { lacp: false },
                    mtu: None,
                    controller: None,
                },
            ],
            addresses: [addr("eth0", "10.0.0.5/24"), addr("eth0.10", "10.10.0.5/24")].into(),
            routes: [route("eth0", "0.0.0.0/0", "10.0.0.1")].into(),
            missing: vec![],
        }
    }

    #[test]
    fn from_scratch_creates_in_order() {
        let actual = Actual {
            links: vec![link(1, "lo"), {
                let mut l = link(2, "eth0");
                l.up = false;
                l
            }],
            ..Default::default()
        };
        let ops: Vec<String> = plan(&desired(), &actual, &BTreeSet::new())
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            ops,
            [
                "create bond0 (Bond { lacp: false })",
                "create eth0.10 (Vlan { parent: \"eth0\", id: 10 })",
                "eth0: mtu 9000",
                "eth0: up",
                "eth0.10: up",
                "bond0: up",
                "eth0: add 10.0.0.5/24",
                "eth0.10: add 10.10.0.5/24",
                "eth0: route 0.0.0.0/0 via 10.0.0.1",
            ]
        );
    }

    #[test]
    fn a_converged_system_needs_no_writes() {
        let d = desired();
        let mut eth0 = link(2, "eth0");
        eth0.mtu = Some(9000);
        let mut vlan = link(3, "eth0.10");
        vlan.info_kind = Some("vlan".into());
        let mut bond = link(4, "bond0");
        bond.info_kind = Some("bond".into());
        let actual = Actual {
            links: vec![link(1, "lo"), eth0, vlan, bond],
            addresses: d
                .addresses
                .iter()
                .cloned()
                .chain([addr("eth0", "fe80::1/64")])
                .collect(),
            routes: d.routes.clone(),
        };
        assert_eq!(plan(&d, &actual, &d.addresses), []);
    }

    #[test]
    fn only_what_networkd_added_is_removed() {
        let mut d = desired();
        d.links.truncate(1);
        d.addresses = [addr("eth0", "10.0.0.6/24")].into();
        d.routes.clear();
        let mut eth0 = link(2, "eth0");
        eth0.mtu = Some(9000);
        let actual = Actual {
            links: vec![eth0],
            // .5 is ours from an earlier config; .99 someone else's.
            addresses: [addr("eth0", "10.0.0.5/24"), addr("eth0", "10.0.0.99/24")].into(),
            routes: [route("eth0", "0.0.0.0/0", "10.0.0.1")].into(),
        };
        let owned = [addr("eth0", "10.0.0.5/24")].into();
        let ops: Vec<String> = plan(&d, &actual, &owned)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            ops,
            [
                "eth0: remove route 0.0.0.0/0",
                "eth0: add 10.0.0.6/24",
                "eth0: remove 10.0.0.5/24",
            ]
        );
    }

    #[test]
    fn members_join_their_bond() {
        let d = Desired {
            links: vec![DesiredLink {
                name: "eth1".into(),
                kind: Kind::Existing,
                mtu: None,
                controller: Some("bond0".into()),
            }],
            ..Default::default()
        };
        let mut bond = link(5, "bond0");
        bond.info_kind = Some("bond".into());
        let mut eth1 = link(3, "eth1");
        let actual = Actual {
            links: vec![bond.clone(), eth1.clone()],
            ..Default::default()
        };
        assert_eq!(
            plan(&d, &actual, &BTreeSet::new()),
            [Op::SetController {
                ifname: "eth1".into(),
                controller: "bond0".into()
            }]
        );
        eth1.controller = Some(5);
        let actual = Actual {
            links: vec![bond, eth1],
            ..Default::default()
        };
        assert_eq!(plan(&d, &actual, &BTreeSet::new()), []);
    }
}
