//! From `machine.network` to [`Desired`]: names resolved (a
//! `deviceSelector` matched against the links the kernel has), bonds,
//! bridges, dummies and VLANs to create, addresses and routes per link.

use std::collections::BTreeSet;

use ipnet::IpNet;
use slate_config::{BondMode, DeviceSelector, Network, Route};

use super::model::{ActualLink, Addr, DEFAULT_METRIC, Desired, DesiredLink, Kind, RouteSpec};

/// What the config asks for, given the links that exist now. The config
/// was validated by machined; anything unparsable is skipped, not fatal.
pub fn desired(network: &Network, links: &[ActualLink]) -> Desired {
    let mut d = Desired::default();
    for (i, iface) in network.interfaces.iter().enumerate() {
        if iface.ignore {
            continue;
        }
        let kind = if let Some(bond) = &iface.bond {
            Kind::Bond {
                lacp: bond.mode == BondMode::Lacp,
            }
        } else if iface.bridge.is_some() {
            Kind::Bridge
        } else if iface.dummy {
            Kind::Dummy
        } else {
            Kind::Existing
        };
        let name = match (&iface.interface, &iface.device_selector) {
            (Some(name), _) => name.clone(),
            (None, Some(sel)) => match links.iter().find(|l| matches(sel, l)) {
                Some(l) => l.name.clone(),
                None => {
                    d.missing.push(format!(
                        "machine.network.interfaces[{i}]: no link matches {sel:?}"
                    ));
                    continue;
                }
            },
            (None, None) => continue,
        };
        if kind == Kind::Existing && !links.iter().any(|l| l.name == name) {
            d.missing.push(format!("{name}: no such link"));
            continue;
        }
        let members = iface
            .bond
            .as_ref()
            .map(|b| &b.interfaces)
            .or(iface.bridge.as_ref().map(|b| &b.interfaces));
        for member in members.into_iter().flatten() {
            if links.iter().any(|l| &l.name == member) {
                d.links.push(DesiredLink {
                    name: member.clone(),
                    kind: Kind::Existing,
                    mtu: None,
                    controller: Some(name.clone()),
                });
            } else {
                d.missing
                    .push(format!("{member} (member of {name}): no such link"));
            }
        }
        d.links.push(DesiredLink {
            name: name.clone(),
            kind,
            mtu: iface.mtu,
            controller: None,
        });
        add_network(&mut d, &name, &iface.addresses, &iface.routes);
        for vlan in &iface.vlans {
            let vname = format!("{name}.{}", vlan.vlan_id);
            d.links.push(DesiredLink {
                name: vname.clone(),
                kind: Kind::Vlan {
                    parent: name.clone(),
                    id: vlan.vlan_id,
                },
                mtu: vlan.mtu,
                controller: None,
            });
            add_network(&mut d, &vname, &vlan.addresses, &vlan.routes);
        }
    }
    // A member listed as an interface of its own as well: one entry, with
    // both its settings and its controller.
    let mut merged: Vec<DesiredLink> = Vec::new();
    for link in d.links.drain(..) {
        match merged.iter_mut().find(|m| m.name == link.name) {
            Some(m) => {
                m.controller = m.controller.take().or(link.controller);
                m.mtu = m.mtu.or(link.mtu);
            }
            None => merged.push(link),
        }
    }
    d.links = merged;
    d
}

fn add_network(d: &mut Desired, ifname: &str, addresses: &[String], routes: &[Route]) {
    let parsed: BTreeSet<Addr> = addresses
        .iter()
        .filter_map(|a| a.parse::<IpNet>().ok())
        .map(|net| Addr {
            ifname: ifname.to_owned(),
            net,
        })
        .collect();
    d.addresses.extend(parsed);
    for r in routes {
        let Ok(dst) = r.network.parse::<IpNet>() else {
            continue;
        };
        d.routes.insert(RouteSpec {
            ifname: ifname.to_owned(),
            dst: dst.trunc(),
            gateway: r.gateway.as_deref().and_then(|g| g.parse().ok()),
            // The kernel stores an IPv6 metric of 0 as 1024: ask for what
            // it will report, or every pass would re-add the route.
            metric: match r.metric {
                Some(0) if dst.addr().is_ipv6() => DEFAULT_METRIC,
                Some(m) => m,
                None => DEFAULT_METRIC,
            },
        });
    }
}

/// A link matches when every property the selector sets matches.
pub fn matches(sel: &DeviceSelector, link: &ActualLink) -> bool {
    let mac = sel
        .hardware_addr
        .as_ref()
        .is_none_or(|m| m.eq_ignore_ascii_case(&link.mac));
    let driver = sel
        .driver
        .as_ref()
        .is_none_or(|d| link.driver.as_deref() == Some(d.as_str()));
    let bus = sel
        .bus_path
        .as_ref()
        .is_none_or(|b| link.bus_paths.iter().any(|p| p == b));
    mac && driver && bus && link.info_kind.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, mac: &str) -> ActualLink {
        ActualLink {
            index,
            name: name.into(),
            info_kind: None,
            mtu: Some(1500),
            up: false,
            controller: None,
            mac: mac.into(),
            driver: Some("virtio_net".into()),
            bus_paths: vec!["virtio1".into(), "0000:00:03.0".into()],
        }
    }

    fn network(yaml: &str) -> Network {
        slate_config::yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn selectors_bonds_and_vlans_resolve() {
        let links = [
            link(2, "ens3", "52:54:00:aa:bb:01"),
            link(3, "ens4", "52:54:00:aa:bb:02"),
            link(4, "ens5", "52:54:00:aa:bb:03"),
        ];
        let n = network(
            "interfaces:
  - deviceSelector: {hardwareAddr: '52:54:00:AA:BB:01', busPath: '0000:00:03.0'}
    addresses: [10.0.0.5/24]
    routes: [{network: 0.0.0.0/0, gateway: 10.0.0.1}]
    vlans: [{vlanId: 20, addresses: [10.20.0.5/24], mtu: 1400}]
  - interface: bond0
    bond: {interfaces: [ens4, ens5, ens9], mode: 802.3ad}
    addresses: [192.168.1.5/24]
  - interface: ens5
    mtu: 9000
  - interface: gone0
  - deviceSelector: {driver: e1000}
",
        );
        let d = desired(&n, &links);
        let names: Vec<(&str, &Kind, Option<&str>, Option<u32>)> = d
            .links
            .iter()
            .map(|l| (l.name.as_str(), &l.kind, l.controller.as_deref(), l.mtu))
            .collect();
        assert_eq!(
            names,
            [
                ("ens3", &Kind::Existing, None, None),
                (
                    "ens3.20",
                    &Kind::Vlan {
                        parent: "ens3".into(),
                        id: 20
                    },
                    None,
                    Some(1400)
                ),
                ("ens4", &Kind::Existing, Some("bond0"), None),
                ("ens5", &Kind::Existing, Some("bond0"), Some(9000)),
                ("bond0", &Kind::Bond { lacp: true }, None, None),
            ]
        );
        assert_eq!(d.addresses.len(), 3);
        assert_eq!(d.routes.iter().next().unwrap().metric, DEFAULT_METRIC);
        assert_eq!(d.missing.len(), 3, "{:?}", d.missing);
        assert!(
            d.missing
                .iter()
                .any(|m| m.starts_with("ens9 (member of bond0)"))
        );
        assert!(d.missing.iter().any(|m| m.starts_with("gone0")));
        assert!(d.missing.iter().any(|m| m.contains("interfaces[4]")));
    }
}
