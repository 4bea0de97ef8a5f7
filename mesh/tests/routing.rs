//! The mesh's policy routing against the real kernel, in a network
//! namespace of the test thread's own (unshare(CLONE_NEWNET)): an
//! underlay veth with addresses and default routes, and the mesh TUN
//! `slmesh0` brought up as networkd does. The checks are what an operator
//! runs: `ip route get` with and without the mesh's mark, `ip rule show`,
//! and where a marked and an unmarked socket send from. Root only, and
//! needs /dev/net/tun and `ip`; skipped with a message otherwise.

#![allow(clippy::unwrap_used)] // test code: a failed step is a failed test

use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};

use ipnet::IpNet;

use slate_mesh as mesh;
use slate_mesh::routing::{MARK, MASK, PolicyRouting, RULE_PRIORITY, TABLE};
use slate_mesh::tun::Tun;
use slate_tests::meshnode;
use slate_tests::netns::{self, ip};

const MESH_IF: &str = "slmesh0";
const UNDERLAY: &str = "veth0";
const MESH_ADDRESS: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 1);

/// A fresh network namespace of the test thread's own
/// ([`netns::in_fresh_netns`]); root and a TUN device only.
fn in_netns<F>(name: &str, body: F)
where
    F: AsyncFnOnce() + Send + 'static,
{
    netns::in_fresh_netns(name, meshnode::skip_reason().map(String::from), body)
}

/// The output device of `ip route get <dst> [mark MARK]`.
fn route_dev(dst: &str, marked: bool) -> String {
    let mark = format!("{MARK:#x}");
    let mut args = vec!["route", "get", dst];
    if marked {
        args.extend(["mark", mark.as_str()]);
    }
    let out = ip(&args);
    let mut words = out.split_whitespace();
    words
        .find(|w| *w == "dev")
        .and_then(|_| words.next())
        .unwrap_or_else(|| panic!("no dev in `ip {args:?}`: {out}"))
        .to_owned()
}

/// The routes of the mesh table, both families, as `ip` lists them.
fn table_routes() -> Vec<String> {
    let tag = format!("table {TABLE} ");
    let mut out = Vec::new();
    for family in ["-4", "-6"] {
        for line in ip(&[family, "route", "show", "table", "all"]).lines() {
            if line.contains(&tag) {
                out.push(line.trim().to_owned());
            }
        }
    }
    out
}

/// The rules of one family that look up the mesh table.
fn table_rules(family: &str) -> Vec<String> {
    let tag = format!("lookup {TABLE}");
    ip(&[family, "rule", "show"])
        .lines()
        .filter(|l| l.contains(&tag))
        .map(|l| l.trim().to_owned())
        .collect()
}

/// Where a UDP socket, marked or not, would send to `dst` from: the
/// kernel picks the source address by the route it finds.
fn source_for(dst: IpAddr, marked: bool) -> IpAddr {
    let bind: SocketAddr = match dst {
        IpAddr::V4(_) => "0.0.0.0:0".parse().unwrap(),
        IpAddr::V6(_) => "[::]:0".parse().unwrap(),
    };
    let socket = UdpSocket::bind(bind).unwrap();
    if marked {
        mesh::routing::mark_socket(&socket, MARK).unwrap();
    }
    socket.connect((dst, mesh::PORT)).unwrap();
    socket.local_addr().unwrap().ip()
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

/// The underlay: veth0 with 10.99.0.1/24 and fd00:99::1/64 and default
/// routes through the other end's subnet.
fn underlay() {
    ip(&[
        "link", "add", UNDERLAY, "type", "veth", "peer", "name", "veth1",
    ]);
    ip(&["addr", "add", "10.99.0.1/24", "dev", UNDERLAY]);
    ip(&[
        "-6",
        "addr",
        "add",
        "fd00:99::1/64",
        "dev",
        UNDERLAY,
        "nodad",
    ]);
    ip(&["link", "set", "veth1", "up"]);
    ip(&["link", "set", UNDERLAY, "up"]);
    ip(&["route", "add", "default", "via", "10.99.0.254"]);
    ip(&["-6", "route", "add", "default", "via", "fd00:99::fe"]);
}

#[test]
fn mesh_policy_routing() {
    in_netns("mesh_policy_routing", async || {
        underlay();
        let (conn, handle, _) = rtnetlink::new_connection().unwrap();
        tokio::spawn(conn);
        let _tun = Tun::open(MESH_IF).unwrap();
        mesh::link::configure(&handle, MESH_IF, IpAddr::V6(MESH_ADDRESS), 64, 1500)
            .await
            .unwrap();
        let index = slate_netlink::link::by_name(&handle, MESH_IF)
            .await
            .unwrap()
            .index;

        // Leftovers of an earlier networkd: a duplicate of our rule and a
        // rule into our table with another mark.
        let (mark, prio, table) = (
            format!("{MARK:#x}/{MASK:#x}"),
            RULE_PRIORITY.to_string(),
            TABLE.to_string(),
        );
        ip(&[
            "rule", "add", "not", "fwmark", &mark, "lookup", &table, "pref", &prio,
        ]);
        ip(&[
            "rule", "add", "fwmark", "0x20", "lookup", &table, "pref", "100",
        ]);
        assert_eq!(table_rules("-4").len(), 2);

        let mut routing = PolicyRouting::new(handle.clone(), index).await.unwrap();
        let expected_rule = format!("{RULE_PRIORITY}:\tnot from all fwmark {mark} lookup {TABLE}");
        for family in ["-4", "-6"] {
            let rules = table_rules(family);
            assert_eq!(rules.len(), 1, "{family}: {rules:?}");
            assert!(
                rules[0].starts_with(&expected_rule),
                "{family}: {rules:?}, expected {expected_rule:?}"
            );
        }
        // Before any network: nothing goes into the mesh.
        assert_eq!(route_dev("10.244.1.5", false), UNDERLAY);

        // A route someone left in our table goes away with the first set.
        ip(&[
            "route",
            "add",
            "10.77.0.0/16",
            "dev",
            MESH_IF,
            "table",
            &table,
        ]);
        // Host bits are dropped: 10.244.1.9/24 is 10.244.1.0/24.
        routing
            .set_networks(&nets(&["10.244.1.9/24", "10.5.0.7/32", "fd00:5::/64"]))
            .await
            .unwrap();
        let routes = table_routes();
        assert_eq!(routes.len(), 3, "{routes:?}");
        for dst in ["10.244.1.0/24 ", "10.5.0.7 ", "fd00:5::/64 "] {
            let line = routes
                .iter()
                .find(|r| r.starts_with(dst))
                .unwrap_or_else(|| panic!("no route to {dst} in {routes:?}"));
            assert!(line.contains(&format!("dev {MESH_IF} ")), "{line}");
            assert!(!line.contains(" via "), "{line}");
            assert!(line.contains("proto 115"), "{line}");
        }
        assert_eq!(
            routing
                .networks()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["10.5.0.7/32", "10.244.1.0/24", "fd00:5::/64"]
        );

        // Unmarked traffic to peers goes into the mesh; the mesh's own
        // marked traffic to the same addresses takes the underlay.
        for dst in ["10.244.1.5", "10.5.0.7", "fd00:5::1"] {
            assert_eq!(route_dev(dst, false), MESH_IF, "{dst}");
            assert_eq!(route_dev(dst, true), UNDERLAY, "{dst} marked");
        }
        // Not a peer network: the underlay, marked or not.
        for dst in ["10.5.0.8", "10.244.2.5", "fd00:6::1"] {
            assert_eq!(route_dev(dst, false), UNDERLAY, "{dst}");
        }
        // The same through real sockets: mark_socket sets the mark the
        // rule tests, so the marked socket sends from the underlay.
        let peer: IpAddr = "fd00:5::1".parse().unwrap();
        assert_eq!(source_for(peer, false), IpAddr::V6(MESH_ADDRESS));
        assert_eq!(
            source_for(peer, true),
            "fd00:99::1".parse::<IpAddr>().unwrap()
        );

        // A new set: the stale route goes, the new one comes, the rest
        // stays.
        routing
            .set_networks(&nets(&["10.244.1.0/24", "fd00:5::/64", "10.244.2.0/24"]))
            .await
            .unwrap();
        let routes = table_routes();
        assert_eq!(routes.len(), 3, "{routes:?}");
        assert!(
            !routes.iter().any(|r| r.starts_with("10.5.0.7 ")),
            "{routes:?}"
        );
        assert_eq!(route_dev("10.5.0.7", false), UNDERLAY);
        assert_eq!(route_dev("10.244.2.5", false), MESH_IF);
        assert_eq!(route_dev("10.244.1.5", false), MESH_IF);

        // networkd restarted: the rules are reused, not doubled, and the
        // routes are still there.
        let again = PolicyRouting::new(handle.clone(), index).await.unwrap();
        for family in ["-4", "-6"] {
            assert_eq!(table_rules(family).len(), 1, "{family}");
        }
        assert_eq!(table_routes().len(), 3);
        assert_eq!(route_dev("fd00:5::1", false), MESH_IF);
        drop(routing);

        // Mesh off: no rule, no route in the table, traffic to the peers
        // takes the underlay.
        again.remove().await.unwrap();
        for family in ["-4", "-6"] {
            assert_eq!(table_rules(family), Vec::<String>::new(), "{family}");
        }
        assert_eq!(table_routes(), Vec::<String>::new());
        assert_eq!(route_dev("10.244.1.5", false), UNDERLAY);
        assert_eq!(route_dev("fd00:5::1", false), UNDERLAY);
    });
}
