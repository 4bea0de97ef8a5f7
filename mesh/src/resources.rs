//! The `mesh-identity` and `mesh-peers` resources: what the controller
//! last saw, shared with the resource service, which a change wakes.

use std::collections::BTreeMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::watch;

use super::device::PeerState;

/// This node in the mesh (`slatectl get mesh-identity`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshIdentity {
    pub node_id: String,
    /// WireGuard public key, base64.
    pub public_key: String,
    pub mesh_address: Ipv6Addr,
    pub interface: String,
    /// `userspace` (boringtun) or `kernel`.
    pub backend: String,
    pub listen_port: u16,
    /// What this node publishes as its endpoints.
    pub endpoints: Vec<SocketAddr>,
    /// Networks it asks peers to route to it.
    pub networks: Vec<String>,
    /// When the discovery service last took this node's record, or why
    /// not.
    pub discovery: String,
}

/// One peer (`slatectl get mesh-peers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshPeer {
    pub node_id: String,
    pub hostname: String,
    pub public_key: String,
    pub mesh_address: Ipv6Addr,
    /// `ip:port`, or `relay <hostname>`.
    pub endpoint: Option<String>,
    pub state: PeerState,
    /// RFC 3339.
    pub last_handshake: Option<String>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Networks routed to it through the mesh.
    pub networks: Vec<String>,
}

#[derive(Default, PartialEq)]
struct View {
    identity: Option<MeshIdentity>,
    peers: BTreeMap<String, MeshPeer>,
}

/// The mesh's resources; empty while the mesh is off.
#[derive(Clone)]
pub struct SharedMesh {
    view: Arc<Mutex<View>>,
    changed: Arc<watch::Sender<()>>,
}

impl Default for SharedMesh {
    fn default() -> Self {
        SharedMesh {
            view: Arc::default(),
            changed: Arc::new(watch::channel(()).0),
        }
    }
}

impl SharedMesh {
    pub fn identity(&self) -> Option<MeshIdentity> {
        self.lock().identity.clone()
    }

    /// Peers by node id.
    pub fn peers(&self) -> BTreeMap<String, MeshPeer> {
        self.lock().peers.clone()
    }

    /// Replaces the view; wakes watchers if it changed.
    pub fn set(&self, identity: Option<MeshIdentity>, peers: Vec<MeshPeer>) {
        let view = View {
            identity,
            peers: peers.into_iter().map(|p| (p.node_id.clone(), p)).collect(),
        };
        let mut current = self.lock();
        if *current != view {
            *current = view;
            drop(current);
            self.changed.send_replace(());
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }
}
