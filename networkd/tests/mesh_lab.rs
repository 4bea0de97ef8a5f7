//! The mesh's acceptance test: five nodes in network namespaces (two cloud
//! control-plane nodes, one routed bare-metal worker, two workers behind
//! symmetric NATs; [`slate_tests::meshlab`] draws the map), each running the
//! built `networkd` with the mesh on, the discovery service on the router,
//! and a packet capture there. What a user would check, in order:
//!
//! 1. the mesh forms from discovery alone (the NATed pair through a relay);
//! 2. every node reaches every other node's mesh address;
//! 3. between nodes, the wire carries only the mesh's UDP;
//! 4. a record sealed with another cluster secret is ignored;
//! 5. the mesh outlives the discovery service, and a new node joins
//!    through a neighbour meanwhile;
//! 6. a node whose address changes is reached again.
//!
//! Root only (and `/dev/net/tun`, `nft`, `tcpdump`); skipped with a message
//! otherwise. Needs the `slate-discovery` binary of the same build:
//!
//!     nice -n 10 env RUSTFLAGS="-C target-feature=+crt-static" cargo build --release \
//!       --target x86_64-unknown-linux-gnu -p slate-networkd -p slate-discovery
//!     nice -n 10 env RUSTFLAGS="-C target-feature=+crt-static" cargo test --release \
//!       --target x86_64-unknown-linux-gnu -p slate-networkd --test mesh_lab -- --nocapture

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use slate_config::MachineType;
use slate_discovery::client;
use slate_discovery::record::ClusterKeys;
use slate_tests::meshlab::{
    self, ECHO_PORT, ICMP, Lab, MESH_PORT, NAT_PUBLIC, Packet, RELAYED, Site, UDP, UP,
};
use slate_tests::wait::eventually_blocking as eventually;

fn networkd() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_networkd"))
}

/// The nodes the mesh starts with.
const FIRST: [(&str, Site, [u8; 4]); 5] = [
    ("c1", Site::Cloud, [198, 51, 100, 11]),
    ("c2", Site::Cloud, [198, 51, 100, 12]),
    ("m1", Site::Metal, [192, 0, 2, 21]),
    ("m2", Site::Nat1, [10, 20, 0, 2]),
    ("m3", Site::Nat2, [10, 30, 0, 2]),
];

/// Nodes with a pod (`10.244.N.0/24` behind a CNI bridge), which publish
/// its network: one in the cloud, one behind a NAT.
const PODS: [(&str, u8); 2] = [("c1", 1), ("m2", 2)];

/// How long the mesh may take to form, or to take a new node in. m2 and
/// m3 (two symmetric NATs) reach each other last: a listing (every 10 s)
/// after the others have published what they see, then 5 s per direct
/// candidate (m3's own address and one NAT mapping per member that sees
/// it: up to 5) before the relay. Runs took 22–37 s.
const FORM: Duration = Duration::from_secs(60);
/// How long a record offered on the service is watched for being refused:
/// longer than the controller lists the service.
const WATCH_REFUSED: Duration = Duration::from_secs(20);
/// A connection over the mesh (or the underlay) that takes longer failed.
const CONNECT: Duration = Duration::from_secs(3);

fn kind(name: &str) -> MachineType {
    if name.starts_with('c') {
        MachineType::Controlplane
    } else {
        MachineType::Worker
    }
}

#[test]
fn the_mesh_forms_survives_discovery_loss_refuses_strangers_and_follows_a_move() {
    if let Some(why) = meshlab::skip_reason() {
        slate_testskip::skip(
            "the_mesh_forms_survives_discovery_loss_refuses_strangers_and_follows_a_move",
            slate_testskip::Reason::Setup(&why),
        );
        return;
    }
    let discovery = slate_tests::artifacts::built("slate-discovery");
    assert!(
        discovery.exists(),
        "{} is not built: cargo build --release --target x86_64-unknown-linux-gnu -p slate-discovery",
        discovery.display()
    );
    let started = Instant::now();
    let mut lab = Lab::start();
    for (name, site, addr) in FIRST {
        lab.add_node(name, site, Ipv4Addr::from(addr));
    }
    let first: Vec<&str> = FIRST.iter().map(|(n, _, _)| *n).collect();
    for (name, n) in PODS {
        lab.add_pod(name, n);
    }

    // The lab itself, before any mesh: a failure past these checks is the
    // mesh's, not the lab's (and a direct path the lab should not have
    // would let a broken relay pass).
    the_underlay_routes_and_masquerades(&lab);
    lab.start_discovery(&discovery, "c1");
    lab.start_capture();
    the_capture_sees_the_routers_traffic(&lab);
    for name in &first {
        let mut config = lab.config(name, kind(name));
        config.cluster.mesh.advertise_pod_networks = lab.pods.contains_key(*name);
        lab.start_networkd(networkd(), name, &config);
    }
    every_networkd_runs_with_its_addresses(&mut lab, &first);

    the_mesh_forms_from_discovery_alone(&mut lab, &first);
    every_node_reaches_every_other(&lab, &first);
    pods_on_two_sites_reach_each_other(&lab);
    only_mesh_udp_crosses_the_router(&lab);
    a_record_sealed_with_another_secret_is_ignored(&mut lab, &first);
    the_mesh_outlives_discovery_and_learns_a_new_node_from_a_neighbour(&mut lab, &first);
    a_node_whose_address_changes_is_reached_again(&mut lab);
    // Relays, gossip and the move included: still nothing but the mesh.
    only_mesh_udp_crosses_the_router(&lab);
    println!("all scenarios passed in {:?}", started.elapsed());
}

/// Plain TCP over node addresses: one bridge, routed between sites, out of
/// both NATs (the server sees the NAT's public address); the private
/// networks and a NAT's public address are unreachable from outside.
fn the_underlay_routes_and_masquerades(lab: &Lab) {
    println!("lab: checking routes and NAT on the underlay");
    let at = |name: &str| SocketAddr::new(IpAddr::V4(lab.node(name).addr), ECHO_PORT);
    for (from, to) in [
        ("c1", "c2"),
        ("c1", "m1"),
        ("m1", "c2"),
        ("m2", "c1"),
        ("m3", "m1"),
    ] {
        meshlab::echo(&lab.node(from).ns, at(to), CONNECT)
            .unwrap_or_else(|e| panic!("the underlay: {e}"));
    }
    for (server, nat) in [("c1", NAT_PUBLIC[0]), ("m1", NAT_PUBLIC[1])] {
        let seen = lab.node(server).echo_clients();
        assert!(
            seen.iter()
                .any(|a| a.ip().to_canonical() == IpAddr::V4(nat)),
            "{server} should see the NATed source {nat}, saw {seen:?}"
        );
    }
    // Symmetric: one source port, two destinations, two public ports.
    let seen: Vec<SocketAddr> = ["c1", "c2"]
        .iter()
        .map(|to| {
            let to = lab.node(to);
            meshlab::udp_source_seen(&lab.node("m2").ns, 40000, &to.ns, to.addr)
                .unwrap_or_else(|e| panic!("UDP from m2 to {}: {e}", to.name))
        })
        .collect();
    assert!(
        seen.iter().all(|a| a.ip() == IpAddr::V4(NAT_PUBLIC[0]))
            && seen[0].port() != seen[1].port(),
        "nat1 should map one source port to a new public port per destination: {seen:?}"
    );
    let unreachable = [
        (
            "m2",
            SocketAddr::new(IpAddr::V4(lab.node("m3").addr), ECHO_PORT),
        ),
        (
            "m3",
            SocketAddr::new(IpAddr::V4(lab.node("m2").addr), ECHO_PORT),
        ),
        (
            "c1",
            SocketAddr::new(IpAddr::V4(lab.node("m2").addr), ECHO_PORT),
        ),
        // A NAT drops what nobody behind it asked for.
        ("m2", SocketAddr::new(IpAddr::V4(NAT_PUBLIC[1]), ECHO_PORT)),
    ];
    for (from, to) in unreachable {
        let result = meshlab::echo(&lab.node(from).ns, to, Duration::from_secs(2));
        assert!(result.is_err(), "{from} -> {to} should be unreachable");
    }
}

/// The capture is running and read back: a request of a node to the
/// discovery service shows in it.
fn the_capture_sees_the_routers_traffic(lab: &Lab) {
    println!("lab: checking that the capture sees a node's request to the discovery service");
    let c1 = lab.node("c1");
    meshlab::http_get(&c1.ns, meshlab::DISCOVERY, "/healthz").expect("/healthz from c1");
    eventually(
        "c1's request to the discovery service in the capture",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || match lab.captured() {
            Ok(packets) => (
                packets.iter().any(|p| {
                    p.src == c1.addr
                        && IpAddr::V4(p.dst) == meshlab::DISCOVERY.ip()
                        && p.dport == meshlab::DISCOVERY.port()
                }),
                format!("{} packets", packets.len()),
            ),
            Err(e) => (false, e),
        },
    );
}

/// Every networkd started, serves its resources and sees the address the
/// test gave its link.
fn every_networkd_runs_with_its_addresses(lab: &mut Lab, names: &[&str]) {
    println!("lab: waiting for networkd to serve its resources on {names:?}");
    eventually(
        "every networkd serving its addresses",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            lab.assert_running();
            let mut missing = Vec::new();
            for name in names {
                let node = lab.node(name);
                let want = format!("eth0/{}/24", node.addr);
                match meshlab::list(&node.socket(), "addresses") {
                    Ok(all) if all.iter().any(|(id, _)| *id == want) => {}
                    Ok(all) => missing.push(format!(
                        "{name}: no {want} in {:?}",
                        all.iter().map(|(id, _)| id).collect::<Vec<_>>()
                    )),
                    Err(e) => missing.push(format!("{name}: {e}")),
                }
            }
            (missing.is_empty(), missing.join("\n"))
        },
    );
}

/// What a node should say of a peer: up, except between the two NATed
/// nodes, which reach each other only through a relay.
fn expected_state(lab: &Lab, a: &str, b: &str) -> &'static str {
    let natted = |n: &str| matches!(lab.node(n).site, Site::Nat1 | Site::Nat2);
    if natted(a) && natted(b) { RELAYED } else { UP }
}

/// Every node of `names` lists every other one (by public key) in the
/// state [`expected_state`] says; a table of what each one says.
fn mesh_complete(lab: &mut Lab, names: &[&str]) -> (bool, String) {
    lab.assert_running();
    let mut keys = BTreeMap::new();
    for name in names {
        match lab.node(name).identity() {
            Ok(id) => {
                keys.insert(id.public_key.clone(), *name);
            }
            Err(e) => return (false, e),
        }
    }
    let (mut ok, mut table) = (true, String::new());
    for a in names {
        let peers = match lab.node(a).peers() {
            Ok(p) => p,
            Err(e) => {
                table += &format!("{a}: {e}\n");
                ok = false;
                continue;
            }
        };
        table += &format!("{a}:");
        for b in names.iter().filter(|b| *b != a) {
            let want = expected_state(lab, a, b);
            let key = keys.iter().find(|(_, n)| *n == b).map(|(k, _)| k);
            let got = peers
                .iter()
                .find(|p| Some(&p.public_key) == key)
                .map_or("missing", |p| p.state.as_str());
            if got == want {
                table += &format!(" {b}={got}");
            } else {
                table += &format!(" {b}={got}(want {want})");
                ok = false;
            }
        }
        let strangers: Vec<&str> = peers
            .iter()
            .filter(|p| !keys.contains_key(&p.public_key))
            .map(|p| p.hostname.as_str())
            .collect();
        if !strangers.is_empty() {
            table += &format!(" and unknown {strangers:?}");
            ok = false;
        }
        table += "\n";
    }
    (ok, table)
}

/// 1. Every node lists the four others: direct between all but the two
///    NATed nodes, which are relayed.
fn the_mesh_forms_from_discovery_alone(lab: &mut Lab, names: &[&str]) {
    println!("1: waiting up to {FORM:?} for every node to list the others (m2<->m3 relayed)");
    let start = Instant::now();
    eventually(
        "the mesh formed from discovery",
        FORM,
        Duration::from_secs(1),
        || mesh_complete(lab, names),
    );
    println!("1: formed after {:?}", start.elapsed());
}

/// TCP echo over the mesh from each of `from` to each of `to` (not to
/// itself), all at once; the failures.
fn echo_over_mesh(lab: &Lab, from: &[&str], to: &[&str]) -> Vec<String> {
    let mut addrs = BTreeMap::new();
    for name in to {
        match lab
            .node(name)
            .identity()
            .and_then(|id| meshlab::mesh_ip(&id.mesh_address))
        {
            Ok(a) => {
                addrs.insert(*name, a);
            }
            Err(e) => return vec![e],
        }
    }
    let attempts: Vec<_> = from
        .iter()
        .flat_map(|a| to.iter().filter(move |b| *b != a).map(move |b| (*a, *b)))
        .map(|(a, b)| {
            let ns = lab.node(a).ns.clone();
            let target = SocketAddr::new(IpAddr::V6(addrs[b]), ECHO_PORT);
            let pair = format!("{a}->{b}");
            std::thread::spawn(move || {
                meshlab::echo(&ns, target, CONNECT).map_err(|e| format!("{pair}: {e}"))
            })
        })
        .collect();
    attempts
        .into_iter()
        .filter_map(|t| t.join().expect("an echo thread").err())
        .collect()
}

fn all_reach_all(lab: &Lab, what: &str, from: &[&str], to: &[&str], limit: Duration) {
    eventually(what, limit, Duration::from_secs(1), || {
        let failed = echo_over_mesh(lab, from, to);
        (failed.is_empty(), failed.join("\n"))
    });
}

/// 2. A TCP echo from every node to every other node's mesh address.
fn every_node_reaches_every_other(lab: &Lab, names: &[&str]) {
    println!(
        "2: TCP echo over the mesh, all {} pairs",
        names.len() * (names.len() - 1)
    );
    all_reach_all(
        lab,
        "every pair over the mesh",
        names,
        names,
        Duration::from_secs(15),
    );
}

/// 2b. The nodes with pods publish their pod networks, and a pod on one
///     reaches the pod on the other, both ways: only through the mesh,
///     as the router has no route to a pod network (step 3 checks that
///     no pod address crossed it).
fn pods_on_two_sites_reach_each_other(lab: &Lab) {
    println!("2b: pods on c1 and m2 reach each other over the mesh");
    for (name, pod) in &lab.pods {
        eventually(
            &format!("{name} publishes its pod network"),
            FORM,
            Duration::from_secs(1),
            || match lab.node(name).identity() {
                Ok(id) => (id.networks.contains(&pod.network), format!("{id:?}")),
                Err(e) => (false, e),
            },
        );
    }
    let (a, b) = (&lab.pods["c1"], &lab.pods["m2"]);
    for (from, to) in [(a, b), (b, a)] {
        let target = SocketAddr::new(IpAddr::V4(to.addr), ECHO_PORT);
        eventually(
            &format!("{} -> {target}", from.ns),
            Duration::from_secs(15),
            Duration::from_secs(1),
            || match meshlab::echo(&from.ns, target, CONNECT) {
                Ok(()) => (true, String::new()),
                Err(e) => (false, e),
            },
        );
    }
}

/// 3. Every packet the router saw between two nodes' addresses is UDP
///    from or to the mesh port, or between mappings of it on the NATs'
///    public addresses (the NATed nodes' ports are rewritten); and there
///    was such traffic. The discovery service's traffic (with the router's
///    own address) is not between nodes. An ICMP error that answers such
///    a datagram (port unreachable from a node whose mesh is not up yet:
///    the seed's gossip can arrive first) carries only its headers.
fn only_mesh_udp_crosses_the_router(lab: &Lab) {
    println!("3: reading the router's capture");
    let packets = lab.captured().expect("reading the capture");
    let mut nodes: Vec<Ipv4Addr> = lab.nodes.values().map(|n| n.addr).collect();
    nodes.extend(NAT_PUBLIC);
    // m1's address before the move, when this runs after it.
    nodes.push(Ipv4Addr::new(192, 0, 2, 21));
    let pods: Vec<Ipv4Addr> = lab.pods.values().map(|p| p.addr).collect();
    let leaked: Vec<_> = packets
        .iter()
        .filter(|p| pods.contains(&p.src) || pods.contains(&p.dst))
        .collect();
    assert!(
        leaked.is_empty(),
        "pod traffic on the underlay ({} packets), first: {:#?}",
        leaked.len(),
        &leaked[..leaked.len().min(5)]
    );
    let between: Vec<_> = packets
        .iter()
        .filter(|p| nodes.contains(&p.src) && nodes.contains(&p.dst))
        .collect();
    let mesh_side = |addr: Ipv4Addr, port: u16| port == MESH_PORT || NAT_PUBLIC.contains(&addr);
    let mesh_udp =
        |p: &Packet| p.proto == UDP && mesh_side(p.src, p.sport) && mesh_side(p.dst, p.dport);
    // The answered datagram went the other way: from p.dst to p.src.
    let answers_mesh_udp = |p: &Packet| {
        p.proto == ICMP
            && p.quoted.is_some_and(|(proto, sport, dport)| {
                proto == UDP && mesh_side(p.dst, sport) && mesh_side(p.src, dport)
            })
    };
    let other: Vec<_> = between
        .iter()
        .filter(|p| !mesh_udp(p) && !answers_mesh_udp(p))
        .collect();
    assert!(
        other.is_empty(),
        "not mesh traffic between nodes ({} of {}), first: {:#?}",
        other.len(),
        between.len(),
        &other[..other.len().min(10)]
    );
    assert!(
        !between.is_empty(),
        "no traffic between nodes in the capture ({} packets)",
        packets.len()
    );
    println!(
        "3: {} packets between nodes, all mesh UDP ({} captured)",
        between.len(),
        packets.len()
    );
}

/// 4. c3 has this cluster's id but another secret. Its record is on the
///    service under its own (wrong) cluster key; copied where this
///    cluster's nodes list (as someone who knows the cluster key but not
///    the secret could), it is refused: nobody lists c3 and c3 lists
///    nobody.
fn a_record_sealed_with_another_secret_is_ignored(lab: &mut Lab, names: &[&str]) {
    println!("4: starting c3 with another cluster secret");
    lab.add_node("c3", Site::Cloud, Ipv4Addr::new(198, 51, 100, 13));
    let right = lab.config("c3", MachineType::Controlplane);
    let mut wrong = right.clone();
    wrong.cluster.secret = Some(base64::engine::general_purpose::STANDARD.encode([0x5a; 32]));
    lab.start_networkd(networkd(), "c3", &wrong);
    let keys = |c: &slate_config::MachineConfig| {
        ClusterKeys::from_config(
            c.cluster.id.as_deref().expect("an id"),
            c.cluster.secret.as_deref().expect("a secret"),
        )
        .expect("cluster keys")
    };
    let (right_keys, wrong_keys) = (keys(&right), keys(&wrong));
    let endpoint = format!("http://{}", meshlab::DISCOVERY);
    let c3_folder = client::affiliates_url(&endpoint, &wrong_keys);
    println!("4: waiting for c3's record on the service");
    let mut sealed = Vec::new();
    eventually(
        "c3 published its record",
        Duration::from_secs(30),
        Duration::from_secs(1),
        || {
            let url = c3_folder.clone();
            match lab.in_router(move || runtime().block_on(client::fetch(&url))) {
                Ok(records) if !records.is_empty() => {
                    sealed = records;
                    (true, String::new())
                }
                Ok(_) => (false, "no record yet".into()),
                Err(e) => (false, e.to_string()),
            }
        },
    );
    let url = client::affiliate_url(&endpoint, &right_keys, "c3-copied");
    let record = sealed[0].clone();
    // The router's service is a public one (no keys): the copier's own
    // proof is not checked, as it would be by a node's copy.
    let copier = keys(&wrong);
    lab.in_router(move || {
        runtime().block_on(client::publish(
            &url,
            &copier,
            &record,
            Duration::from_secs(300),
        ))
    })
    .expect("copying c3's record to the cluster's folder");
    let c3_key = lab
        .node("c3")
        .identity()
        .expect("c3's mesh identity")
        .public_key;
    let mut keys_of_others = Vec::new();
    for name in names {
        keys_of_others.push(lab.node(name).identity().expect("an identity").public_key);
    }
    println!("4: watching for {WATCH_REFUSED:?}: nobody may list c3, c3 may list nobody");
    let until = Instant::now() + WATCH_REFUSED;
    while Instant::now() < until {
        lab.assert_running();
        for name in names {
            let peers = lab.node(name).peers().expect("peers");
            assert!(
                peers.iter().all(|p| p.public_key != c3_key),
                "{name} took c3 (another secret) as a peer: {peers:#?}"
            );
        }
        let theirs = lab.node("c3").peers().unwrap_or_default();
        assert!(
            theirs
                .iter()
                .all(|p| !keys_of_others.contains(&p.public_key)),
            "c3 (another secret) took the cluster's nodes as peers: {theirs:#?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    lab.stop_networkd("c3");
}

/// 5. With the discovery service gone the mesh carries on, and c4 (right
///    secret) joins through its control-plane endpoint's host, c1.
fn the_mesh_outlives_discovery_and_learns_a_new_node_from_a_neighbour(
    lab: &mut Lab,
    names: &[&str],
) {
    println!("5: stopping the discovery service; echo on all pairs again after 10 s");
    lab.stop_discovery();
    std::thread::sleep(Duration::from_secs(10));
    all_reach_all(
        lab,
        "every pair without discovery",
        names,
        names,
        Duration::from_secs(15),
    );
    println!("5: starting c4; waiting up to {FORM:?} for everyone to list it");
    lab.add_node("c4", Site::Cloud, Ipv4Addr::new(198, 51, 100, 14));
    let config = lab.config("c4", MachineType::Controlplane);
    lab.start_networkd(networkd(), "c4", &config);
    let mut all = names.to_vec();
    all.push("c4");
    eventually(
        "c4 joined through gossip",
        FORM,
        Duration::from_secs(1),
        || mesh_complete(lab, &all),
    );
    println!("5: TCP echo between c4 and every node");
    all_reach_all(
        lab,
        "c4 to every node",
        &["c4"],
        &all,
        Duration::from_secs(15),
    );
    all_reach_all(
        lab,
        "every node to c4",
        &all,
        &["c4"],
        Duration::from_secs(15),
    );
}

/// 6. m1 moves from 192.0.2.21 to 192.0.2.22 (its default route comes
///    back with the new address); c1 and m2 reach it again.
fn a_node_whose_address_changes_is_reached_again(lab: &mut Lab) {
    println!("6: moving m1 to 192.0.2.22; waiting up to {FORM:?} for c1 and m2 to reach it");
    lab.readdress("m1", Ipv4Addr::new(192, 0, 2, 22));
    all_reach_all(lab, "m1 after its move", &["c1", "m2"], &["m1"], FORM);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}
