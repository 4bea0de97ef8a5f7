//! What the device is told (each peer's [`PeerConfig`], through a
//! [`PeerControl`]) and what it reports ([`DeviceStatus`]): the kernel
//! backend speaks the same types. The datapath's counters are atomics
//! ([`SharedStatus`]), so the hot loop never takes a lock to count.

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use ipnet::IpNet;
use serde::Serialize;
use tokio::sync::watch;

use crate::select::Path;

/// One peer as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub public_key: [u8; 32],
    /// Candidate endpoints, tried in turn until one answers; the source of
    /// the peer's authenticated datagrams then wins (roaming).
    pub endpoints: Vec<SocketAddr>,
    pub allowed_ips: Vec<IpNet>,
    pub persistent_keepalive: Option<u16>,
    /// Peers that say they reach this one: tried, as relays, after the
    /// direct candidates.
    pub relays: Vec<[u8; 32]>,
}

impl PeerConfig {
    /// The peer's mesh address: its first allowed IP, a single IPv6
    /// address, as [`super::peers::peer_configs`] makes them.
    pub fn mesh_address(&self) -> Option<Ipv6Addr> {
        match self.allowed_ips.first() {
            Some(IpNet::V6(net)) if net.prefix_len() == 128 => Some(net.addr()),
            _ => None,
        }
    }
}

/// How a peer is reached now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    /// Authenticated datagrams arrive directly.
    Up,
    /// Authenticated datagrams arrive through a relay.
    Relayed,
    /// Nothing recent: its paths are being tried.
    Connecting,
}

/// What the `mesh-peers` resource shows about a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub public_key: [u8; 32],
    pub endpoint: Option<Path>,
    pub state: PeerState,
    /// Payload bytes sent to and received from the peer (boringtun's
    /// counters: decrypted sizes, keepalives excluded).
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub last_handshake: Option<SystemTime>,
}

/// Counters of the whole device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceStatus {
    pub peers: Vec<PeerStatus>,
    /// Datagrams refused before reaching a peer (not WireGuard, bad MAC,
    /// unknown key or index, relay requests from strangers).
    pub rejected_datagrams: u64,
    /// Packets from the TUN with no peer for their destination, or whose
    /// peer has no path yet.
    pub unroutable_packets: u64,
    /// Datagrams this node passed on between two of its peers.
    pub relayed_datagrams: u64,
    /// TCP segments from the TUN cut into more than one packet, and TUN
    /// writes that joined more than one ([`super::offload`]).
    pub segments_cut: u64,
    pub segments_joined: u64,
}

/// Readable while the device runs: the counters are atomics, bumped on
/// the per-packet path without a lock; the peers are refreshed every
/// [`TICK`].
#[derive(Debug, Clone, Default)]
pub struct SharedStatus(Arc<StatusCells>);

#[derive(Debug, Default)]
struct StatusCells {
    peers: Mutex<Vec<PeerStatus>>,
    rejected_datagrams: AtomicU64,
    unroutable_packets: AtomicU64,
    relayed_datagrams: AtomicU64,
    segments_cut: AtomicU64,
    segments_joined: AtomicU64,
}

/// A counter of [`DeviceStatus`].
#[derive(Debug, Clone, Copy)]
pub(super) enum Counter {
    Rejected,
    Unroutable,
    Relayed,
    SegmentsCut,
    SegmentsJoined,
}

impl SharedStatus {
    /// The status as it is now.
    pub fn snapshot(&self) -> DeviceStatus {
        let c = &self.0;
        DeviceStatus {
            peers: c.peers.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            rejected_datagrams: c.rejected_datagrams.load(Ordering::Relaxed),
            unroutable_packets: c.unroutable_packets.load(Ordering::Relaxed),
            relayed_datagrams: c.relayed_datagrams.load(Ordering::Relaxed),
            segments_cut: c.segments_cut.load(Ordering::Relaxed),
            segments_joined: c.segments_joined.load(Ordering::Relaxed),
        }
    }

    pub(super) fn add(&self, counter: Counter, n: u64) {
        let c = &self.0;
        let cell = match counter {
            Counter::Rejected => &c.rejected_datagrams,
            Counter::Unroutable => &c.unroutable_packets,
            Counter::Relayed => &c.relayed_datagrams,
            Counter::SegmentsCut => &c.segments_cut,
            Counter::SegmentsJoined => &c.segments_joined,
        };
        cell.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn set_peers(&self, peers: Vec<PeerStatus>) {
        *self.0.peers.lock().unwrap_or_else(|e| e.into_inner()) = peers;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("reading from TUN device {name}")]
    TunRead {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// Changes the peers of a running device; the latest set wins.
#[derive(Clone)]
pub struct PeerControl(pub(super) Arc<watch::Sender<Vec<PeerConfig>>>);

impl PeerControl {
    pub fn set(&self, peers: Vec<PeerConfig>) {
        self.0.send_if_modified(|current| {
            let changed = *current != peers;
            *current = peers;
            changed
        });
    }
}

impl super::Device {
    /// Publishes each peer's state and counters, as the datapath sees them.
    pub(super) fn publish_status(&self) {
        let now = SystemTime::now();
        let instant = Instant::now();
        let mut slots: Vec<&u32> = self.peers.keys().collect();
        slots.sort();
        let peers = slots
            .into_iter()
            .map(|slot| {
                let p = &self.peers[slot];
                let (since, tx, rx, _loss, _rtt) = p.tunn.stats();
                let endpoint = p.path.current();
                let state = match endpoint {
                    _ if !p.path.is_up(instant) => PeerState::Connecting,
                    Some(Path::Relay(_)) => PeerState::Relayed,
                    _ => PeerState::Up,
                };
                PeerStatus {
                    public_key: p.config.public_key,
                    endpoint,
                    state,
                    tx_bytes: tx as u64,
                    rx_bytes: rx as u64,
                    last_handshake: since.and_then(|d| now.checked_sub(d)),
                }
            })
            .collect();
        self.status.set_peers(peers);
    }
}
