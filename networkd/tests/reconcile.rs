//! The reconciler against the real kernel, in a network namespace of the
//! test thread's own (unshare(CLONE_NEWNET)): nothing touches the host's
//! network, and the namespace disappears with the thread, also when an
//! assertion fails. Root only; skipped with a message otherwise. Needs `ip`
//! (iproute2) to make veth pairs and to play the operator.
// Test code outside #[test] fns: a panic here fails the test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use slate_config::Network;
use slate_networkd::reconcile::{Reconciler, Rtnetlink};
use slate_tests::netns::{self, ip};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A fresh network namespace of the test thread's own
/// ([`netns::in_fresh_netns`]); root only.
fn in_netns<F>(name: &str, body: F)
where
    F: AsyncFnOnce() + Send + 'static,
{
    netns::in_fresh_netns(name, (!is_root()).then(|| "needs root".into()), body)
}

fn network(yaml: &str) -> Network {
    slate_config::yaml::from_str(yaml).unwrap()
}

/// Links that exist already (veth pairs): every kernel has them.
const CONFIG: &str = "interfaces:
  - interface: veth0
    mtu: 1400
    addresses: [10.1.0.5/24, 'fd00:1::5/64']
    routes:
      - {network: 10.9.0.0/16, gateway: 10.1.0.1}
      - {network: 'fd00:9::/48', gateway: 'fd00:1::1', metric: 50}
  - interface: veth2
    addresses: [10.3.0.1/32]
";

/// Links networkd creates: VLAN, bond and dummy drivers, which the Debian
/// kernel of the image has but a minimal host kernel may lack.
const VIRTUAL: &str = "interfaces:
  - interface: veth0
    addresses: [10.1.0.5/24]
    vlans:
      - {vlanId: 10, addresses: [10.10.0.5/24]}
  - interface: bond0
    bond: {interfaces: [veth2, veth4], mode: active-backup}
    addresses: [10.2.0.5/24]
  - interface: dummy0
    dummy: true
    addresses: [10.4.0.1/32]
";

/// Whether this kernel can make the link kinds of [`VIRTUAL`].
fn kernel_has_virtual_links() -> bool {
    ["dummy", "bond"].iter().all(|kind| {
        let name = format!("probe-{kind}");
        let ok = Command::new("ip")
            .args(["link", "add", &name, "type", kind])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            ip(&["link", "del", &name]);
        }
        ok
    })
}

fn veths() {
    for (a, b) in [("veth0", "veth1"), ("veth2", "veth3"), ("veth4", "veth5")] {
        ip(&["link", "add", a, "type", "veth", "peer", "name", b]);
    }
}

fn reconciler(dir: &Path) -> Reconciler {
    let (conn, handle, _) = rtnetlink::new_connection().unwrap();
    tokio::spawn(conn);
    Reconciler::new(Rtnetlink::new(handle, "/sys"), dir.join("owned"))
}

#[test]
fn links_addresses_and_routes_converge_and_a_second_pass_writes_nothing() {
    in_netns("converge", async || {
        veths();
        let dir = tempfile::tempdir().unwrap();
        let mut r = reconciler(dir.path());
        let net = network(CONFIG);
        let first = r.pass(&net).await.unwrap();
        assert!(first.failed.is_empty(), "{:?}", first.failed);
        assert!(first.missing.is_empty(), "{:?}", first.missing);
        assert_eq!(
            first.done.len(),
            8,
            "mtu, 2 × up, 3 addresses, 2 routes: {:?}",
            first.done
        );

        let addrs = ip(&["-o", "addr"]);
        for want in [
            "veth0 inet 10.1.0.5/24",
            "veth0 inet6 fd00:1::5/64",
            "veth2 inet 10.3.0.1/32",
        ] {
            assert!(
                addrs.lines().any(|l| squash(l).contains(want)),
                "{want} missing:\n{addrs}"
            );
        }
        let veth0 = ip(&["link", "show", "veth0"]);
        assert!(
            veth0.contains("mtu 1400") && veth0.contains(",UP"),
            "{veth0}"
        );
        let routes = ip(&["route", "show", "proto", "115"]);
        assert!(
            routes.contains("10.9.0.0/16 via 10.1.0.1 dev veth0"),
            "{routes}"
        );
        let routes6 = ip(&["-6", "route", "show", "proto", "115"]);
        assert!(
            routes6.contains("fd00:9::/48 via fd00:1::1 dev veth0")
                && routes6.contains("metric 50"),
            "{routes6}"
        );

        // Nothing changed: the second pass plans and writes nothing.
        let second = r.pass(&net).await.unwrap();
        assert!(second.done.is_empty(), "{:?}", second.done);
        assert!(second.failed.is_empty(), "{:?}", second.failed);
    });
}

#[test]
fn vlan_bond_and_dummy_links_are_created() {
    in_netns("virtual links", async || {
        if !kernel_has_virtual_links() {
            slate_testskip::skip(
                "vlan_bond_and_dummy_links_are_created",
                slate_testskip::Reason::Kernel("dummy and bond links"),
            );
            return;
        }
        veths();
        let dir = tempfile::tempdir().unwrap();
        let mut r = reconciler(dir.path());
        let net = network(VIRTUAL);
        let first = r.pass(&net).await.unwrap();
        assert!(first.failed.is_empty(), "{:?}", first.failed);
        let addrs = ip(&["-o", "-4", "addr"]);
        for want in [
            "veth0.10 inet 10.10.0.5/24",
            "bond0 inet 10.2.0.5/24",
            "dummy0 inet 10.4.0.1/32",
        ] {
            assert!(
                addrs.lines().any(|l| squash(l).contains(want)),
                "{want}:\n{addrs}"
            );
        }
        let vlan = ip(&["-d", "link", "show", "veth0.10"]);
        assert!(vlan.contains("vlan protocol 802.1Q id 10"), "{vlan}");
        for member in ["veth2", "veth4"] {
            let l = ip(&["link", "show", member]);
            assert!(l.contains("master bond0"), "{l}");
        }
        let second = r.pass(&net).await.unwrap();
        assert!(second.done.is_empty(), "{:?}", second.done);
    });
}

#[test]
fn only_networkd_s_own_addresses_and_routes_are_removed() {
    in_netns("ownership", async || {
        veths();
        let dir = tempfile::tempdir().unwrap();
        let mut r = reconciler(dir.path());
        r.pass(&network(CONFIG)).await.unwrap();
        // Someone else's address and route on the same link.
        ip(&["addr", "add", "10.1.0.99/24", "dev", "veth0"]);
        ip(&[
            "route",
            "add",
            "10.77.0.0/16",
            "via",
            "10.1.0.1",
            "dev",
            "veth0",
        ]);
        // The config drops 10.1.0.5 and its routes.
        let smaller = network("interfaces:\n  - interface: veth0\n    addresses: [10.1.0.6/24]\n");
        let report = r.pass(&smaller).await.unwrap();
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        let addrs = ip(&["-o", "-4", "addr", "show", "veth0"]);
        assert!(!addrs.contains("10.1.0.5/24"), "{addrs}");
        assert!(
            addrs.contains("10.1.0.6/24") && addrs.contains("10.1.0.99/24"),
            "{addrs}"
        );
        let routes = ip(&["route"]);
        assert!(!routes.contains("10.9.0.0/16"), "{routes}");
        assert!(routes.contains("10.77.0.0/16"), "{routes}");
        // A restarted networkd (a new reconciler) still knows what it added.
        let mut again = reconciler(dir.path());
        let report = again
            .pass(&network("interfaces:\n  - interface: veth0\n"))
            .await
            .unwrap();
        let addrs = ip(&["-o", "-4", "addr", "show", "veth0"]);
        assert!(!addrs.contains("10.1.0.6/24"), "{addrs}; {:?}", report.done);
        assert!(addrs.contains("10.1.0.99/24"), "{addrs}");
    });
}

#[test]
fn a_deleted_address_and_route_come_back_within_a_second() {
    in_netns("restore", async || {
        veths();
        let dir = tempfile::tempdir().unwrap();
        // The published config, as machined writes it.
        let mut config = slate_config::generate::generate(&slate_config::generate::Options {
            cluster_name: "net".into(),
            endpoint: "https://10.0.0.1:6443".into(),
            ..Default::default()
        })
        .unwrap()
        .worker;
        config.machine.network = network(CONFIG);
        config.machine.network.nameservers = vec!["10.1.0.53".into(), "fd00:1::53".into()];
        config.machine.network.search_domains = vec!["cluster.example".into()];
        let config_file = dir.path().join("config.json");
        std::fs::write(&config_file, config.to_json().unwrap()).unwrap();
        let ready_path = dir.path().join("network.ready");
        let ready = std::sync::Arc::new(std::sync::Mutex::new(
            slate_networkd::ready::ReadyFile::new(&ready_path).unwrap(),
        ));
        let resolv = dir.path().join("resolv.conf");
        // The thread shares the host's UTS namespace: no sethostname.
        let names = slate_networkd::names::SharedNames::new(resolv.clone(), false);
        let status = slate_networkd::reconcile::SharedNetworkStatus::default();
        tokio::spawn(slate_networkd::reconcile::run(
            slate_networkd::reconcile::Context {
                sysfs: PathBuf::from("/sys"),
                network: slate_config::feed::derive(
                    slate_config::feed::follow(config_file.clone()),
                    slate_networkd::reconcile::settings_from_config,
                ),
                owned_file: dir.path().join("owned"),
                ready,
                names: names.clone(),
                status: status.clone(),
                dhcp: None,
            },
        ));
        wait_for("the first pass", || {
            ip(&["-o", "-4", "addr", "show", "veth2"]).contains("10.3.0.1/32")
        })
        .await;
        // The config's DNS servers and search domains make resolv.conf.
        wait_for("resolv.conf", || {
            std::fs::read_to_string(&resolv).is_ok_and(|t| {
                t.contains("nameserver 10.1.0.53\nnameserver fd00:1::53\nsearch cluster.example\n")
            })
        })
        .await;
        assert_eq!(
            names.resolvers().source,
            slate_networkd::names::NameSource::Config
        );
        wait_for("networkstatus converged", || {
            let s = status.get();
            s.configured && s.converged
        })
        .await;
        // apid waits for this file: the configured addresses are announced.
        wait_for("the ready file", || {
            std::fs::read_to_string(&ready_path).is_ok_and(|t| {
                t.contains("veth0 10.1.0.5/24 config") && t.contains("veth2 10.3.0.1/32 config")
            })
        })
        .await;

        ip(&["addr", "del", "10.1.0.5/24", "dev", "veth0"]);
        let t = Instant::now();
        wait_for("the address to come back", || {
            ip(&["-o", "-4", "addr", "show", "veth0"]).contains("10.1.0.5/24")
        })
        .await;
        let address_back = t.elapsed();
        // The kernel dropped the route with the address; it came back too.
        wait_for("the route to come back", || {
            ip(&["route"]).contains("10.9.0.0/16 via 10.1.0.1")
        })
        .await;
        assert!(
            address_back < Duration::from_secs(1),
            "restored after {address_back:?}"
        );

        ip(&["route", "del", "10.9.0.0/16"]);
        let t = Instant::now();
        wait_for("the route to come back", || {
            ip(&["route"]).contains("10.9.0.0/16 via 10.1.0.1")
        })
        .await;
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "route restored after {:?}",
            t.elapsed()
        );

        // A config change takes effect without a restart.
        config.machine.network.interfaces[1].addresses = vec!["10.3.0.2/32".into()];
        std::fs::write(&config_file, config.to_json().unwrap()).unwrap();
        wait_for("the new veth2 address", || {
            let a = ip(&["-o", "-4", "addr", "show", "veth2"]);
            a.contains("10.3.0.2/32") && !a.contains("10.3.0.1/32")
        })
        .await;

        // A link the config names that is not there: reported in the
        // status, and configured as soon as it appears.
        let ghost = network("interfaces:\n  - interface: ghost0\n    addresses: [10.5.0.1/24]\n");
        config.machine.network.interfaces.extend(ghost.interfaces);
        std::fs::write(&config_file, config.to_json().unwrap()).unwrap();
        wait_for("ghost0 reported missing", || {
            let s = status.get();
            !s.converged && s.missing.iter().any(|m| m.contains("ghost0"))
        })
        .await;
        ip(&[
            "link", "add", "ghost0", "type", "veth", "peer", "name", "ghost1",
        ]);
        wait_for("ghost0's address", || {
            ip(&["-o", "-4", "addr", "show", "ghost0"]).contains("10.5.0.1/24")
        })
        .await;
        wait_for("networkstatus converged again", || status.get().converged).await;
    });
}

/// Polls `check` every 20 ms for up to 5 s.
async fn wait_for(what: &str, check: impl Fn() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `ip -o` pads with variable spaces and backslashes; compare words only.
fn squash(s: &str) -> String {
    s.split_whitespace()
        .filter(|w| *w != "\\")
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn status_lists_and_watches_addresses() {
    use futures::StreamExt as _;
    use slate_proto::resource::resource_service_client::ResourceServiceClient;
    use slate_proto::resource::watch_event::Kind;
    use slate_proto::resource::{ListRequest, WatchRequest};
    in_netns("status", async || {
        veths();
        let dir = tempfile::tempdir().unwrap();
        let mut r = reconciler(dir.path());
        r.pass(&network(CONFIG)).await.unwrap();
        let (conn, handle, _) = rtnetlink::new_connection().unwrap();
        tokio::spawn(conn);
        let socket = dir.path().join("networkd.sock");
        let names = slate_networkd::names::SharedNames::new(dir.path().join("resolv.conf"), false);
        tokio::spawn(slate_networkd::resources::serve(
            socket.clone(),
            handle,
            PathBuf::from("/sys"),
            slate_networkd::resources::Sources {
                time: Default::default(),
                names: names.clone(),
                network: Default::default(),
                balancer: slate_balancer::Balancer::new(Default::default()).unwrap(),
                mesh: Default::default(),
            },
        ));
        wait_for("the socket", || socket.exists()).await;
        let mut client = ResourceServiceClient::new(slate_client::local(&socket));
        let list = client
            .list(ListRequest {
                r#type: "addresses".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .resources;
        let ids: Vec<&str> = list.iter().map(|r| r.id.as_str()).collect();
        assert!(ids.contains(&"veth0/10.1.0.5/24"), "{ids:?}");
        let spec: serde_json::Value = serde_json::from_str(
            &list
                .iter()
                .find(|r| r.id == "veth0/10.1.0.5/24")
                .unwrap()
                .spec_json,
        )
        .unwrap();
        assert_eq!(spec["family"], "inet");
        let routes = client
            .list(ListRequest {
                r#type: "routes".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .resources;
        assert!(
            routes
                .iter()
                .any(|r| r.spec_json.contains("\"protocol\":\"slate\"")
                    && r.id.starts_with("veth0/10.9.0.0/16")),
            "{routes:?}"
        );
        let err = client
            .list(ListRequest {
                r#type: "pods".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);

        // Watch: the snapshot, a bookmark, then a change as it happens.
        let mut events = client
            .watch(WatchRequest {
                r#type: "addresses".into(),
            })
            .await
            .unwrap()
            .into_inner();
        loop {
            let e = events.next().await.unwrap().unwrap();
            if e.kind == Kind::Bookmark as i32 {
                break;
            }
            assert_eq!(e.kind, Kind::Existing as i32);
        }
        ip(&["addr", "add", "10.1.0.77/24", "dev", "veth0"]);
        let e = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("a change within 5 s")
            .unwrap()
            .unwrap();
        assert_eq!(e.kind, Kind::Created as i32);
        assert_eq!(e.resource.unwrap().id, "veth0/10.1.0.77/24");

        // networkd's own decisions: listed, and a change is pushed.
        let mut hostnames = client
            .watch(WatchRequest {
                r#type: "hostname".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let first = hostnames.next().await.unwrap().unwrap();
        assert!(
            first
                .resource
                .unwrap()
                .spec_json
                .contains("\"source\":\"none\""),
            "no source has named the node yet"
        );
        names.set_lease(
            "veth0",
            Some(slate_networkd::names::Contribution {
                hostname: Some("from-dhcp".into()),
                nameservers: vec!["10.1.0.53".parse().unwrap()],
                search: Vec::new(),
            }),
        );
        let e = loop {
            let e = tokio::time::timeout(Duration::from_secs(5), hostnames.next())
                .await
                .expect("a hostname change within 5 s")
                .unwrap()
                .unwrap();
            if e.kind != Kind::Bookmark as i32 {
                break e;
            }
        };
        assert_eq!(e.kind, Kind::Updated as i32);
        let spec: serde_json::Value = serde_json::from_str(&e.resource.unwrap().spec_json).unwrap();
        assert_eq!(
            (spec["hostname"].as_str(), spec["source"].as_str()),
            (Some("from-dhcp"), Some("dhcp"))
        );
        let resolvers = client
            .list(ListRequest {
                r#type: "resolvers".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .resources;
        let spec: serde_json::Value = serde_json::from_str(&resolvers[0].spec_json).unwrap();
        assert_eq!(spec["nameservers"], serde_json::json!(["10.1.0.53"]));
    });
}

/// A child that is killed when dropped: also when an assertion fails.
struct Killed(std::process::Child);

impl Killed {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Records corrections instead of changing the host's clock.
#[derive(Default)]
struct Recorder(Vec<slate_networkd::timesync::Action>);

impl slate_networkd::timesync::Clock for Recorder {
    fn apply(&mut self, action: slate_networkd::timesync::Action) -> std::io::Result<()> {
        self.0.push(action);
        Ok(())
    }
}

#[test]
fn time_syncs_against_chrony_and_reports_a_lost_server() {
    use slate_networkd::timesync::{Action, STEP_LIMIT, sync_once};
    if !Path::new("/usr/sbin/chronyd").exists() {
        slate_testskip::skip(
            "time_syncs_against_chrony",
            slate_testskip::Reason::Tool("chronyd"),
        );
        return;
    }
    in_netns("time", async || {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("chrony.conf");
        // An NTP server on this namespace's loopback that serves the local
        // clock and never touches it (-x).
        std::fs::write(
            &conf,
            format!(
                "local stratum 8\nallow 127.0.0.1\nbindaddress 127.0.0.1\nport 123\ncmdport 0\npidfile {}\n",
                dir.path().join("chronyd.pid").display()
            ),
        )
        .unwrap();
        let mut chrony = Killed(
            Command::new("/usr/sbin/chronyd")
                .args(["-x", "-d", "-f"])
                .arg(&conf)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let status = slate_networkd::timesync::SharedTimeStatus::default();
        let mut clock = Recorder::default();
        let servers = vec!["127.0.0.1".to_owned()];
        let start = Instant::now();
        while !sync_once(&mut clock, &servers, &status).await {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "no sync: {:?}",
                status.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let s = status.lock().unwrap().clone();
        assert!(s.synced && s.error.is_none(), "{s:?}");
        assert_eq!(s.server.as_deref(), Some("127.0.0.1"));
        assert_eq!(s.stratum, Some(8), "chrony serves its local stratum");
        // The same clock on both ends: the offset is tiny, and was slewed
        // or left alone, never stepped.
        assert!(s.offset_ms.unwrap().abs() < STEP_LIMIT * 1000.0, "{s:?}");
        assert!(
            clock
                .0
                .iter()
                .all(|a| !matches!(a, Action::Step(o) if o.abs() > 0.01)),
            "{:?}",
            clock.0
        );

        // The server goes away: the status says so, and stays synced.
        chrony.kill();
        assert!(!sync_once(&mut clock, &servers, &status).await);
        let s = status.lock().unwrap().clone();
        assert!(s.synced, "the clock keeps its last correction: {s:?}");
        assert!(
            s.error
                .as_deref()
                .is_some_and(|e| e.starts_with("127.0.0.1")),
            "{s:?}"
        );
    });
}
