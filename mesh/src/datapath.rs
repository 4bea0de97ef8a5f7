//! The controller's one view of the two WireGuard backends
//! (`cluster.mesh.backend`): the userspace [`Device`] (boringtun) or the
//! kernel's ([`KernelDevice`]).
//!
//! Both give the controller a socket on which gossip leaves and an inbox
//! where gossip arrives, take peer sets and report [`DeviceStatus`].
//!
//! With the kernel backend the kernel owns the mesh port, so:
//! - gossip leaves from and returns to an ephemeral port of networkd's
//!   (records sent to peers' port 51820 reach userspace peers; a kernel
//!   peer drops them, and learns records from discovery and from the
//!   answers its own gossip gets);
//! - endpoint selection is done here, over netlink: a peer that is not up
//!   is moved to its next candidate every [`super::select::RETRY`]; the
//!   kernel's own roaming does the rest. Up means a fresh handshake and
//!   received bytes that grew within [`super::select::STALE`] (the
//!   kernel reports no time of last receipt), so a dead peer is noticed
//!   in 40 s, not when its handshake is 3 minutes old ([`RxWatch`]). A
//!   peer quiet for [`PING_AFTER`] gets a datagram to its mesh address
//!   through the link, which any WireGuard answers (see [`super::ping`]:
//!   an idle kernel peer that hears our keepalives sends none);
//! - there is no relay: the kernel cannot frame or unframe relayed
//!   datagrams, so relays are ignored.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::device::{
    Device, DeviceStatus, Gossip, PeerConfig, PeerControl, PeerState, SharedStatus,
};
use super::kernel::{KernelDevice, KernelError};
use super::ping::PING_AFTER;
use super::select::{Path, STALE, Selector};
use super::wire::{self, Message};

/// Aborts a task when dropped.
pub struct Task(pub tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// One per node, held by the controller and never moved on a hot path:
// boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Datapath {
    User {
        control: PeerControl,
        status: SharedStatus,
        _task: Task,
    },
    Kernel {
        device: KernelDevice,
        applied: Vec<PeerConfig>,
        paths: HashMap<[u8; 32], Selector>,
        rx: RxWatch,
        /// Unmarked, so its datagrams go into the link: liveness pings.
        ping: UdpSocket,
        pinged: HashMap<[u8; 32], Instant>,
        _reader: Task,
    },
}

/// When each kernel peer's received-bytes count last grew.
#[derive(Debug, Default)]
pub struct RxWatch(HashMap<[u8; 32], (u64, Instant)>);

impl RxWatch {
    /// When `key`'s count last grew.
    pub fn last_growth(&self, key: &[u8; 32]) -> Option<Instant> {
        self.0.get(key).map(|(_, at)| *at)
    }

    /// Notes the counts in `status` at `now`, and marks `connecting` every
    /// peer whose count has not grown for [`STALE`] (a peer seen for the
    /// first time counts as having just received).
    pub fn apply(&mut self, status: &mut DeviceStatus, now: Instant) {
        self.0
            .retain(|key, _| status.peers.iter().any(|p| p.public_key == *key));
        for peer in &mut status.peers {
            let seen = self
                .0
                .entry(peer.public_key)
                .or_insert((peer.rx_bytes, now));
            if peer.rx_bytes != seen.0 {
                *seen = (peer.rx_bytes, now);
            }
            if now.saturating_duration_since(seen.1) >= STALE {
                peer.state = PeerState::Connecting;
            }
        }
    }
}

/// A started backend and its gossip socket and inbox.
pub struct Started {
    pub datapath: Datapath,
    pub socket: Arc<UdpSocket>,
    pub inbox: mpsc::Receiver<Gossip>,
}

impl Datapath {
    /// Runs a userspace device on its own task.
    pub fn user(mut device: Device) -> Started {
        let control = device.control();
        let status = device.status();
        let socket = device.socket();
        let inbox = device.gossip_inbox().expect("a new device has its inbox");
        let task = tokio::spawn(async move {
            let Err(e) = device.run().await;
            tracing::error!("mesh: device stopped: {}", slate_common::error::chain(&e));
        });
        Started {
            datapath: Datapath::User {
                control,
                status,
                _task: Task(task),
            },
            socket,
            inbox,
        }
    }

    /// Wraps a kernel device; gossip gets an ephemeral, marked socket.
    pub async fn kernel(device: KernelDevice, mark: u32) -> std::io::Result<Started> {
        let socket = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).await?;
        super::routing::mark_socket(&socket, mark)?;
        let socket = Arc::new(socket);
        let (tx, inbox) = mpsc::channel(256);
        let reader = tokio::spawn(read_gossip(socket.clone(), tx));
        let ping = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).await?;
        Ok(Started {
            datapath: Datapath::Kernel {
                device,
                applied: Vec::new(),
                paths: HashMap::new(),
                rx: RxWatch::default(),
                ping,
                pinged: HashMap::new(),
                _reader: Task(reader),
            },
            socket,
            inbox,
        })
    }

    /// Whether the backend stopped (the controller then starts again).
    pub fn is_finished(&self) -> bool {
        match self {
            Datapath::User { _task, .. } => _task.0.is_finished(),
            Datapath::Kernel { _reader, .. } => _reader.0.is_finished(),
        }
    }

    pub async fn status(&mut self) -> Result<DeviceStatus, KernelError> {
        match self {
            Datapath::User { status, .. } => Ok(status.snapshot()),
            Datapath::Kernel { device, rx, .. } => {
                let mut status = device.status().await?;
                rx.apply(&mut status, Instant::now());
                Ok(status)
            }
        }
    }

    /// Makes `configs` the peers; with the kernel, also moves peers that
    /// do not answer to their next candidate.
    pub async fn set_peers(
        &mut self,
        configs: Vec<PeerConfig>,
        status: &DeviceStatus,
    ) -> Result<(), KernelError> {
        match self {
            Datapath::User { control, .. } => {
                control.set(configs);
                Ok(())
            }
            Datapath::Kernel {
                device,
                applied,
                paths,
                rx,
                ping,
                pinged,
                ..
            } => {
                if *applied != configs {
                    device.set_peers(&configs).await?;
                    paths.retain(|k, _| configs.iter().any(|c| c.public_key == *k));
                    pinged.retain(|k, _| configs.iter().any(|c| c.public_key == *k));
                    for c in &configs {
                        paths
                            .entry(c.public_key)
                            .and_modify(|s| s.update(c.endpoints.clone(), Vec::new()))
                            .or_insert_with(|| Selector::new(c.endpoints.clone(), Vec::new()));
                    }
                    *applied = configs;
                }
                let now = Instant::now();
                for peer in &status.peers {
                    let Some(path) = paths.get_mut(&peer.public_key) else {
                        continue;
                    };
                    if peer.state == PeerState::Up {
                        let heard = rx.last_growth(&peer.public_key).unwrap_or(now);
                        if let Some(current) = peer.endpoint {
                            path.received(current, heard);
                        }
                        let quiet = |t: Instant| now.saturating_duration_since(t) >= PING_AFTER;
                        let due = pinged.get(&peer.public_key).is_none_or(|t| quiet(*t));
                        let mesh_address = applied
                            .iter()
                            .find(|c| c.public_key == peer.public_key)
                            .and_then(PeerConfig::mesh_address);
                        if quiet(heard)
                            && due
                            && let Some(to) = mesh_address
                        {
                            pinged.insert(peer.public_key, now);
                            // The discard port: the datagram only has to
                            // cross the tunnel as data.
                            let _ = ping.try_send_to(b"ping", SocketAddr::new(to.into(), 9));
                        }
                        continue;
                    }
                    if let Some(Path::Direct(next)) = path.tick(now) {
                        device.set_endpoint(&peer.public_key, next).await?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// Gossip frames on the kernel backend's socket, to the controller.
async fn read_gossip(socket: Arc<UdpSocket>, tx: mpsc::Sender<Gossip>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, src) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                tracing::debug!("mesh: gossip socket: {e}");
                continue;
            }
        };
        if let Ok(Message::Gossip(sealed)) = wire::parse(&buf[..n]) {
            // A full queue drops: the sender repeats every round.
            let _ = tx.try_send((super::device::canonical(src), sealed.to_vec()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::device::PeerStatus;
    use super::*;

    fn peer(key: u8, rx: u64) -> PeerStatus {
        PeerStatus {
            public_key: [key; 32],
            endpoint: None,
            state: PeerState::Up,
            tx_bytes: 0,
            rx_bytes: rx,
            last_handshake: None,
        }
    }

    fn states(watch: &mut RxWatch, peers: Vec<PeerStatus>, at: Instant) -> Vec<PeerState> {
        let mut status = DeviceStatus {
            peers,
            ..DeviceStatus::default()
        };
        watch.apply(&mut status, at);
        status.peers.iter().map(|p| p.state).collect()
    }

    #[test]
    fn a_kernel_peer_whose_bytes_stop_growing_is_down_after_stale() {
        let t0 = Instant::now();
        let mut w = RxWatch::default();
        let up = PeerState::Up;
        assert_eq!(
            states(&mut w, vec![peer(1, 100), peer(2, 50)], t0),
            [up, up]
        );
        // Peer 1's keepalives keep coming; peer 2 went silent.
        let t1 = t0 + STALE / 2;
        assert_eq!(
            states(&mut w, vec![peer(1, 132), peer(2, 50)], t1),
            [up, up]
        );
        let t2 = t0 + STALE;
        assert_eq!(
            states(&mut w, vec![peer(1, 164), peer(2, 50)], t2),
            [up, PeerState::Connecting]
        );
        // It answers again.
        assert_eq!(states(&mut w, vec![peer(2, 82)], t2), [up]);
        assert_eq!(w.0.len(), 1, "a removed peer is forgotten");
    }
}
