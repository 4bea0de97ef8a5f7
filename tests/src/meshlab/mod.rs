//! A small internet in network namespaces for the mesh's acceptance test
//! (`networkd/tests/mesh_lab.rs`): cloud nodes, a bare-metal node, two
//! nodes behind symmetric NATs, the discovery service, and a packet
//! capture on the router that sees everything that crosses between sites.
//!
//! ```text
//!            cloud 198.51.100.0/24                 bare metal 192.0.2.0/24
//!   c1 .11  c2 .12  (c3 .13  c4 .14)           m1 .21      nat1 .2      nat2 .3
//!      \      |      /                            |         |  masq      |  masq
//!       [bridge cloud] --- r (.1 both, routes, -- [bridge metal]  10.20.0.1   10.30.0.1
//!                          slate-discovery :3000)                |            |
//!                          tcpdump -i any                       m2 10.20.0.2  m3 10.30.0.2
//! ```
//!
//! Every node namespace has `eth0` with its address and a default route,
//! a TCP echo server on `[::]:7` (a thread of this process; `ping` is not
//! installed here) and, once started, the built `networkd` with a machine
//! config of its own. `r` routes between the two subnets without NAT and
//! has no route to the private networks; `nat1`/`nat2` masquerade with
//! `fully-random` ports, so every new destination gets a new public port
//! (a symmetric NAT): m2 and m3 can reach everyone, and be reached by whom
//! they talked to, but not each other directly. Unsolicited packets to a
//! NAT's public address are dropped silently, as home routers do (an ICMP
//! error would show in the capture as non-mesh traffic between sites).
//!
//! Everything (processes, echo threads, namespaces) goes away on drop, also
//! after a failed assertion; a failing test first prints every node's log
//! tail and mesh resources. Root only; needs `ip`, `nft`, `tcpdump` and
//! `/dev/net/tun` ([`skip_reason`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use slate_config::{MachineConfig, MachineType};

use crate::netns::{self, Namespaces, exec, run};

/// The mesh's UDP port (networkd's `mesh::PORT`).
pub const MESH_PORT: u16 = 51820;
/// The echo servers' port.
pub const ECHO_PORT: u16 = 7;
/// Where the discovery service listens, in `r`.
pub const DISCOVERY: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 3000);
/// The control-plane endpoint of every config: c1's node address, which a
/// node also tries as a gossip seed while discovery is down.
pub const CONTROL_PLANE_ENDPOINT: &str = "https://198.51.100.11:6443";

/// Why the lab cannot run here, if it cannot.
pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("no /dev/net/tun".into());
    }
    netns::missing_tool(&["ip", "nft", "tcpdump"])
}

/// Where a node is plugged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// On the cloud bridge, 198.51.100.0/24, gateway r.
    Cloud,
    /// On the bare-metal bridge, 192.0.2.0/24, gateway r, not NATed.
    Metal,
    /// Behind `nat1` (public 192.0.2.2), 10.20.0.0/24.
    Nat1,
    /// Behind `nat2` (public 192.0.2.3), 10.30.0.0/24.
    Nat2,
}

impl Site {
    /// The node's gateway and prefix length on this site.
    fn gateway(self) -> (&'static str, u8) {
        match self {
            Site::Cloud => ("198.51.100.1", 24),
            Site::Metal => ("192.0.2.1", 24),
            Site::Nat1 => ("10.20.0.1", 24),
            Site::Nat2 => ("10.30.0.1", 24),
        }
    }
}

/// The NAT routers: namespace suffix, public address, private gateway.
const NATS: [(&str, &str, &str); 2] = [
    ("nat1", "192.0.2.2/24", "10.20.0.1/24"),
    ("nat2", "192.0.2.3/24", "10.30.0.1/24"),
];

/// The public (masquerading) addresses of the NAT routers.
pub const NAT_PUBLIC: [Ipv4Addr; 2] = [Ipv4Addr::new(192, 0, 2, 2), Ipv4Addr::new(192, 0, 2, 3)];

/// A node of the lab: its namespace, address, echo server, and networkd
/// once started.
pub struct Node {
    pub name: String,
    pub ns: String,
    pub site: Site,
    pub addr: Ipv4Addr,
    pub dir: PathBuf,
    networkd: Option<Child>,
    echo: EchoServer,
}

impl Node {
    pub fn socket(&self) -> PathBuf {
        self.dir.join("run/networkd.sock")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("networkd.log")
    }

    /// Source addresses the echo server accepted connections from.
    pub fn echo_clients(&self) -> Vec<SocketAddr> {
        self.echo
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A pod on a node: its own namespace behind the node's CNI bridge, with
/// an echo server.
pub struct Pod {
    pub ns: String,
    pub addr: Ipv4Addr,
    /// The node's pod network, which it publishes when
    /// `advertisePodNetworks` is on.
    pub network: String,
    _echo: EchoServer,
}

pub struct Lab {
    /// Namespace names start with this (unique per process).
    tag: String,
    pub nodes: BTreeMap<String, Node>,
    /// Pods by node name.
    pub pods: BTreeMap<String, Pod>,
    discovery: Option<Child>,
    capture: Option<Child>,
    dir: tempfile::TempDir,
    /// The config every node's is made from (one cluster's secrets).
    base: slate_config::generate::Bundle,
    /// Last: dropped after every process and echo thread is gone.
    namespaces: Namespaces,
}

impl Lab {
    /// `r`, `nat1`, `nat2` wired up; no nodes yet.
    pub fn start() -> Lab {
        let tag = format!("ml{}", std::process::id() % 100_000);
        let base = slate_config::generate::generate(&slate_config::generate::Options {
            cluster_name: "meshlab".into(),
            endpoint: CONTROL_PLANE_ENDPOINT.into(),
            ..Default::default()
        })
        .expect("generating the cluster's configs");
        let mut lab = Lab {
            tag,
            nodes: BTreeMap::new(),
            pods: BTreeMap::new(),
            discovery: None,
            capture: None,
            dir: tempfile::tempdir().expect("a temporary directory"),
            base,
            namespaces: Namespaces::new(),
        };
        let r = lab.ns("r");
        lab.namespaces.add(&r);
        forward(&r);
        for (bridge, addr) in [("cloud", "198.51.100.1/24"), ("metal", "192.0.2.1/24")] {
            run(&["ip", "-n", &r, "link", "add", bridge, "type", "bridge"]);
            run(&["ip", "-n", &r, "addr", "add", addr, "dev", bridge]);
            run(&["ip", "-n", &r, "link", "set", bridge, "up"]);
        }
        for (name, public, _) in NATS {
            let nat = lab.ns(name);
            lab.namespaces.add(&nat);
            forward(&nat);
            lab.namespaces.link((&nat, "pub"), (&r, name));
            run(&["ip", "-n", &r, "link", "set", name, "master", "metal"]);
            run(&["ip", "-n", &nat, "addr", "add", public, "dev", "pub"]);
            run(&[
                "ip",
                "-n",
                &nat,
                "route",
                "add",
                "default",
                "via",
                "192.0.2.1",
            ]);
            // `priv` comes with the node behind it ([`Lab::add_node`]).
            let rules = "table ip nat {\n\
                 chain postrouting {\n\
                   type nat hook postrouting priority srcnat; policy accept;\n\
                   oifname \"pub\" masquerade fully-random\n\
                 }\n\
               }\n\
               table ip filter {\n\
                 chain input {\n\
                   type filter hook input priority filter; policy accept;\n\
                   iifname \"pub\" ct state new drop\n\
                 }\n\
               }\n";
            let path = lab.dir.path().join(format!("{name}.nft"));
            std::fs::write(&path, rules).expect("writing the NAT rules");
            exec(&nat, &["nft", "-f", path.to_str().expect("a UTF-8 path")]);
        }
        lab
    }

    /// The namespace name of lab member `name`.
    pub fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.tag)
    }

    /// Adds node `name` at `addr` on `site`, with its echo server; no
    /// networkd yet.
    pub fn add_node(&mut self, name: &str, site: Site, addr: Ipv4Addr) {
        let ns = self.ns(name);
        self.namespaces.add(&ns);
        let (gateway, prefix) = site.gateway();
        match site {
            Site::Cloud | Site::Metal => {
                let r = self.ns("r");
                let bridge = if site == Site::Cloud {
                    "cloud"
                } else {
                    "metal"
                };
                self.namespaces.link((&ns, "eth0"), (&r, name));
                run(&["ip", "-n", &r, "link", "set", name, "master", bridge]);
            }
            Site::Nat1 | Site::Nat2 => {
                let (nat, _, private) = NATS[usize::from(site == Site::Nat2)];
                let nat = self.ns(nat);
                self.namespaces.link((&ns, "eth0"), (&nat, "priv"));
                run(&["ip", "-n", &nat, "addr", "add", private, "dev", "priv"]);
            }
        }
        run(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/{prefix}"),
            "dev",
            "eth0",
        ]);
        run(&["ip", "-n", &ns, "route", "add", "default", "via", gateway]);
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(dir.join("run")).expect("the node's directory");
        std::fs::create_dir_all(dir.join("sys")).expect("the node's fake sysfs");
        let echo = EchoServer::start(&ns);
        self.nodes.insert(
            name.to_owned(),
            Node {
                name: name.to_owned(),
                ns,
                site,
                addr,
                dir,
                networkd: None,
                echo,
            },
        );
    }

    /// Gives node `name` a pod, as a bridge CNI would: a bridge `cni0` with
    /// the gateway address `10.244.N.1/24` (in the default pod subnet),
    /// and a pod namespace on it at `10.244.N.2` whose default route is
    /// the bridge; the node forwards. Only the mesh can carry its traffic
    /// to another node: the router knows no pod network.
    pub fn add_pod(&mut self, name: &str, n: u8) {
        let node = self.ns(name);
        let pod = self.ns(&format!("{name}-pod"));
        self.namespaces.add(&pod);
        let (gateway, addr) = (format!("10.244.{n}.1"), Ipv4Addr::new(10, 244, n, 2));
        run(&["ip", "-n", &node, "link", "add", "cni0", "type", "bridge"]);
        run(&[
            "ip",
            "-n",
            &node,
            "addr",
            "add",
            &format!("{gateway}/24"),
            "dev",
            "cni0",
        ]);
        run(&["ip", "-n", &node, "link", "set", "cni0", "up"]);
        self.namespaces.link((&pod, "eth0"), (&node, "vethpod"));
        run(&[
            "ip", "-n", &node, "link", "set", "vethpod", "master", "cni0",
        ]);
        run(&[
            "ip",
            "-n",
            &pod,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ]);
        run(&["ip", "-n", &pod, "route", "add", "default", "via", &gateway]);
        forward(&node);
        let echo = EchoServer::start(&pod);
        self.pods.insert(
            name.to_owned(),
            Pod {
                ns: pod,
                addr,
                network: format!("10.244.{n}.0/24"),
                _echo: echo,
            },
        );
    }

    /// Moves node `name` to `addr` in the same subnet: the old address
    /// goes (and the default route with it), the new one comes, the
    /// default route is put back.
    pub fn readdress(&mut self, name: &str, addr: Ipv4Addr) {
        let node = self.nodes.get_mut(name).expect("an added node");
        let (gateway, prefix) = node.site.gateway();
        let (old, new) = (
            format!("{}/{prefix}", node.addr),
            format!("{addr}/{prefix}"),
        );
        run(&["ip", "-n", &node.ns, "addr", "del", &old, "dev", "eth0"]);
        run(&["ip", "-n", &node.ns, "addr", "add", &new, "dev", "eth0"]);
        run(&[
            "ip", "-n", &node.ns, "route", "replace", "default", "via", gateway,
        ]);
        node.addr = addr;
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .get(name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Node `name`'s machine config: this cluster's, mesh on, discovery at
    /// [`DISCOVERY`], `kind`, hostname `name`.
    pub fn config(&self, name: &str, kind: MachineType) -> MachineConfig {
        let mut config = match kind {
            MachineType::Controlplane => self.base.controlplane.clone(),
            _ => self.base.worker.clone(),
        };
        config.machine.network.hostname = Some(name.to_owned());
        config.cluster.mesh.enabled = true;
        config.cluster.mesh.discovery.endpoint = Some(format!("http://{DISCOVERY}"));
        config
    }

    /// Publishes `config` for node `name` and starts its networkd (`ip=off`:
    /// the test set the addresses; the mesh key file in the node's dir).
    pub fn start_networkd(&mut self, bin: &Path, name: &str, config: &MachineConfig) {
        let node = self.nodes.get_mut(name).expect("an added node");
        std::fs::write(
            node.dir.join("run/machine-config.json"),
            config.to_json().expect("the config as JSON"),
        )
        .expect("publishing the config");
        std::fs::write(node.dir.join("cmdline"), "console=ttyS0 ip=off\n").expect("the cmdline");
        let log = File::create(node.log_path()).expect("the node's log");
        let child = netns::networkd_command(bin, &node.ns, &node.dir)
            .env("SLATE_NETWORKD_MESH_KEY", node.dir.join("mesh.key"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting networkd");
        node.networkd = Some(child);
    }

    /// Stops node `name`'s networkd (SIGKILL: the others must cope with a
    /// node that vanishes).
    pub fn stop_networkd(&mut self, name: &str) {
        if let Some(mut child) = self.nodes.get_mut(name).and_then(|n| n.networkd.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Panics (with the dump) if a started networkd has exited.
    pub fn assert_running(&mut self) {
        let mut dead = Vec::new();
        for node in self.nodes.values_mut() {
            if let Some(child) = node.networkd.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                dead.push(format!("{}: networkd exited ({status})", node.name));
            }
        }
        assert!(dead.is_empty(), "{}", dead.join("\n"));
    }

    /// Starts `slate-discovery` (the binary at `bin`) on [`DISCOVERY`] in
    /// `r`, and waits until a node (`from`) gets 200 from `/healthz`.
    pub fn start_discovery(&mut self, bin: &Path, from: &str) {
        let log = File::create(self.dir.path().join("discovery.log")).expect("its log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns("r")])
            .arg(bin)
            .args(["--listen", &DISCOVERY.to_string()])
            .env("SLATE_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        self.discovery = Some(child);
        let ns = self.node(from).ns.clone();
        crate::wait::eventually_blocking(
            "the discovery service answers /healthz",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || match http_get(&ns, DISCOVERY, "/healthz") {
                Ok(answer) => (answer.starts_with("HTTP/1.1 200"), answer),
                Err(e) => (false, e),
            },
        );
    }

    /// Kills the discovery service.
    pub fn stop_discovery(&mut self) {
        if let Some(mut child) = self.discovery.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `f` on a thread inside namespace `r` (e.g. the discovery
    /// client, as an observer on the service's own network).
    pub fn in_router<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        in_namespace(&self.ns("r"), f)
    }

    /// Starts `tcpdump -i any` in `r` (every router port: all traffic
    /// between sites and between nodes of one bridge), writing each
    /// packet as it comes.
    pub fn start_capture(&mut self) {
        let file = self.capture_path();
        let log_path = self.dir.path().join("tcpdump.log");
        let log = File::create(&log_path).expect("tcpdump's log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns("r")])
            .args([
                "tcpdump", "-i", "any", "-nn", "-U", "-s", "128", "-Z", "root", "-w",
            ])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting tcpdump");
        self.capture = Some(child);
        crate::wait::eventually_blocking(
            "tcpdump listening",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                (log.contains("listening on"), log)
            },
        );
    }

    pub fn capture_path(&self) -> PathBuf {
        self.dir.path().join("r.pcap")
    }

    /// The IPv4 packets captured so far.
    pub fn captured(&self) -> Result<Vec<Packet>, String> {
        read_pcap(&self.capture_path())
    }

    /// Every node's log tail and mesh resources, and the service's log.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for node in self.nodes.values() {
            out += &format!(
                "===== {} ({:?} {}) networkd log, last lines:\n{}\n",
                node.name,
                node.site,
                node.addr,
                tail(&node.log_path(), 40)
            );
            if node.networkd.is_some() {
                for kind in [IDENTITY, PEERS] {
                    out += &format!("----- {} {kind}:\n", node.name);
                    match list(&node.socket(), kind) {
                        Ok(all) => {
                            for (id, spec) in all {
                                out += &format!("{id}: {spec}\n");
                            }
                        }
                        Err(e) => out += &format!("{e}\n"),
                    }
                }
            }
        }
        out += &format!(
            "===== slate-discovery log, last lines:\n{}\n",
            tail(&self.dir.path().join("discovery.log"), 20)
        );
        out
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = writeln!(std::io::stderr(), "{}", self.dump());
        }
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for name in names {
            self.stop_networkd(&name);
        }
        self.stop_discovery();
        if let Some(mut child) = self.capture.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The echo servers stop with the nodes (their own Drop); the
        // namespaces go last (field order).
        self.nodes.clear();
    }
}

fn forward(ns: &str) {
    exec(ns, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
}

/// The last `lines` lines of a log, without the HTTP/2 framing that the
/// test's own polling of the resources makes networkd log at debug level.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains(" frame=") && !l.contains("Connection{peer="))
        .collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub use capture::{ICMP, Packet, TCP, UDP, read_pcap};
use probe::EchoServer;
pub use probe::{echo, http_get, in_namespace, udp_source_seen};

mod capture;
mod probe;

// ---- networkd's mesh resources -------------------------------------------
// The one place their type names and fields are spelled (the contract of
// networkd's mesh controller); the rest of the test uses these structs.

pub const IDENTITY: &str = "mesh-identity";
pub const PEERS: &str = "mesh-peers";
/// `mesh-peers` states: a fresh direct handshake, through another member,
/// neither yet.
pub const UP: &str = "up";
pub const RELAYED: &str = "relayed";
pub const CONNECTING: &str = "connecting";

/// `mesh-identity` (id `node`, as networkd's other singletons).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    pub node_id: String,
    pub public_key: String,
    pub mesh_address: String,
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// What the node publishes as routed by it (node IPs, pod networks).
    #[serde(default)]
    pub networks: Vec<String>,
}

/// One `mesh-peers` resource.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Peer {
    pub node_id: String,
    #[serde(default)]
    pub hostname: String,
    pub public_key: String,
    pub mesh_address: String,
    #[serde(default)]
    pub endpoint: Option<String>,
    pub state: String,
    #[serde(default)]
    pub last_handshake: serde_json::Value,
    #[serde(default)]
    pub rx_bytes: serde_json::Value,
    #[serde(default)]
    pub tx_bytes: serde_json::Value,
}

/// A mesh address as the resources write it (with or without `/128`).
pub fn mesh_ip(text: &str) -> Result<Ipv6Addr, String> {
    let bare = text.split('/').next().unwrap_or(text);
    bare.parse()
        .map_err(|e| format!("mesh address {text:?}: {e}"))
}

impl Node {
    pub fn identity(&self) -> Result<Identity, String> {
        let all = list(&self.socket(), IDENTITY)?;
        let (_, spec) = all
            .into_iter()
            .find(|(id, _)| id == "node")
            .ok_or_else(|| format!("{}: no {IDENTITY} node", self.name))?;
        serde_json::from_value(spec).map_err(|e| format!("{}: {IDENTITY}: {e}", self.name))
    }

    pub fn peers(&self) -> Result<Vec<Peer>, String> {
        list(&self.socket(), PEERS)?
            .into_iter()
            .map(|(id, spec)| {
                serde_json::from_value(spec)
                    .map_err(|e| format!("{}: {PEERS} {id}: {e}", self.name))
            })
            .collect()
    }
}

/// The resources of type `kind` on networkd's socket, as `slatectl get`
/// reads them: id and spec.
pub fn list(socket: &Path, kind: &str) -> Result<Vec<(String, serde_json::Value)>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut client = slate_proto::resource::resource_service_client::ResourceServiceClient::new(
            slate_client::local(socket),
        );
        let request = slate_proto::resource::ListRequest {
            r#type: kind.to_owned(),
        };
        let answer = tokio::time::timeout(Duration::from_secs(5), client.list(request))
            .await
            .map_err(|_| format!("{}: list {kind}: no answer in 5 s", socket.display()))?
            .map_err(|e| format!("{}: list {kind}: {e}", socket.display()))?;
        answer
            .into_inner()
            .resources
            .into_iter()
            .map(|r| {
                let spec = serde_json::from_str(&r.spec_json)
                    .map_err(|e| format!("{kind} {}: {e}", r.id))?;
                Ok((r.id, spec))
            })
            .collect()
    })
}
