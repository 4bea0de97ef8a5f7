//! The userspace WireGuard mesh (networkd's `mesh` library) between two
//! network namespaces, for networkd's mesh test and [`crate::meshbench`]:
//! namespaces `<tag>a` and `<tag>b` joined by a veth (10.99.0.1/24 and
//! 10.99.0.2/24, MTU 1500), and in each a thread of this process that
//! enters the namespace and runs the mesh device (TUN `slmesh0`, UDP
//! 51820) with the other node as its only peer. The mesh addresses are
//! the nodes' ULA addresses (slate-discovery's derivation). Root only, and
//! `/dev/net/tun` (see [`skip_reason`]).

use std::net::{IpAddr, Ipv6Addr};
use std::sync::mpsc;
use std::thread::JoinHandle;

use anyhow::{Context as _, anyhow};
use slate_mesh::device::{Device, DeviceStatus, PeerConfig, SharedStatus};
use slate_mesh::keys::NodeKey;
use slate_mesh::tun::Tun;
use slate_mesh::{self as mesh, PORT};

use crate::netns::{self, Namespaces};

pub const CLUSTER_ID: [u8; 32] = [42; 32];
pub const MESH_IF: &str = "slmesh0";
/// The veth's addresses (the underlay) of nodes A and B.
pub const A_UNDERLAY: &str = "10.99.0.1";
pub const B_UNDERLAY: &str = "10.99.0.2";
/// The veth's MTU (the kernel's default, stated because the mesh's MTU
/// derives from it).
pub const UNDERLAY_MTU: u32 = 1500;

/// Why the mesh cannot run here, if it cannot.
pub fn skip_reason() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        Some("not root")
    } else if !std::path::Path::new("/dev/net/tun").exists() {
        Some("no /dev/net/tun")
    } else {
        None
    }
}

/// A mesh device running in a namespace, on a thread of its own; stopped
/// (and its TUN closed) on drop.
pub struct Node {
    pub address: Ipv6Addr,
    status: SharedStatus,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl Node {
    /// Starts the device in namespace `ns`; returns once it is configured
    /// (TUN up with its address, UDP bound) and running.
    pub fn start(ns: &str, key: NodeKey, peer: PeerConfig) -> anyhow::Result<Node> {
        let address = key.mesh_address(&CLUSTER_ID);
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let ns = ns.to_owned();
        let thread = std::thread::spawn(move || -> Result<(), String> {
            let fail = |ready_tx: &mpsc::Sender<Result<SharedStatus, String>>, e: String| {
                let _ = ready_tx.send(Err(e.clone()));
                Err(e)
            };
            if let Err(e) = netns::enter(&ns) {
                return fail(&ready_tx, format!("entering {ns}: {e}"));
            }
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return fail(&ready_tx, format!("{ns}: a runtime: {e}")),
            };
            rt.block_on(async move {
                let device = match bring_up(key, peer, address).await {
                    Ok(d) => d,
                    Err(e) => return fail(&ready_tx, format!("{ns}: {e:#}")),
                };
                let _ = ready_tx.send(Ok(device.status()));
                tokio::select! {
                    r = device.run() => Err(format!("{ns}: the device stopped: {:?}", r.err())),
                    _ = stop_rx => Ok(()),
                }
            })
        });
        let status = match ready_rx.recv() {
            Ok(ready) => ready.map_err(|e| anyhow!("starting the mesh: {e}"))?,
            Err(_) => {
                let why = thread.join();
                return Err(anyhow!("the mesh node thread ended early: {why:?}"));
            }
        };
        Ok(Node {
            address,
            status,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The device's counters (refreshed every tick).
    pub fn status(&self) -> DeviceStatus {
        self.status.snapshot()
    }

    pub fn running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("mesh node: {e}"),
                Err(_) => eprintln!("mesh node thread panicked"),
            }
        }
    }
}

/// The TUN with the mesh address and MTU, the UDP socket, the device:
/// what networkd will do on a node, in the calling thread's namespace.
async fn bring_up(key: NodeKey, peer: PeerConfig, address: Ipv6Addr) -> anyhow::Result<Device> {
    let (conn, handle, _) = rtnetlink::new_connection().context("netlink")?;
    tokio::spawn(conn);
    let tun = Tun::open(MESH_IF)?;
    mesh::link::configure(&handle, MESH_IF, IpAddr::V6(address), 64, UNDERLAY_MTU).await?;
    let udp = mesh::udp::bind(PORT)
        .await
        .context("binding the mesh port")?;
    Ok(Device::new(key, tun, udp, vec![peer])?)
}

/// `key`'s node as a peer at `endpoint` ("address:port"), its mesh
/// address its only allowed IP.
pub fn peer_of(key: &NodeKey, endpoint: &str) -> PeerConfig {
    PeerConfig {
        public_key: key.public_bytes(),
        endpoints: vec![endpoint.parse().expect("an endpoint address:port")],
        allowed_ips: vec![ipnet::IpNet::from(IpAddr::V6(
            key.mesh_address(&CLUSTER_ID),
        ))],
        persistent_keepalive: Some(mesh::device::PERSISTENT_KEEPALIVE),
        relays: vec![],
    }
}

/// Two namespaces, a veth between them, a mesh node in each.
pub struct Lab {
    pub a_ns: String,
    pub b_ns: String,
    pub b_if: String,
    pub a: Node,
    pub b: Node,
    // Last: the nodes go (closing their TUNs) before the namespaces.
    _namespaces: Namespaces,
}

impl Lab {
    /// Namespaces named after `tag` and this process (a leftover of an
    /// aborted run is replaced).
    pub fn new(tag: &str) -> anyhow::Result<Lab> {
        let tag = format!("{tag}{}", std::process::id() % 100_000);
        let (a_ns, b_ns) = (format!("{tag}a"), format!("{tag}b"));
        let (a_if, b_if) = (format!("{tag}va"), format!("{tag}vb"));
        let mut namespaces = Namespaces::new();
        namespaces.add(&a_ns);
        namespaces.add(&b_ns);
        namespaces.veth(
            (&a_ns, &a_if, &format!("{A_UNDERLAY}/24")),
            (&b_ns, &b_if, &format!("{B_UNDERLAY}/24")),
        );
        for (ns, ifname) in [(&a_ns, &a_if), (&b_ns, &b_if)] {
            netns::run(&[
                "ip",
                "-n",
                ns,
                "link",
                "set",
                ifname,
                "mtu",
                &UNDERLAY_MTU.to_string(),
            ]);
        }
        let ka = NodeKey::generate().context("a key")?;
        let kb = NodeKey::generate().context("a key")?;
        let a = Node::start(
            &a_ns,
            ka.clone(),
            peer_of(&kb, &format!("{B_UNDERLAY}:{PORT}")),
        )?;
        let b = Node::start(&b_ns, kb, peer_of(&ka, &format!("{A_UNDERLAY}:{PORT}")))?;
        Ok(Lab {
            a_ns,
            b_ns,
            b_if,
            a,
            b,
            _namespaces: namespaces,
        })
    }
}
