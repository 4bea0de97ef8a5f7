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
//! - endpoint selection is done here, over netlink: a peer without a
//!   fresh handshake is moved to its next candidate every
//!   [`super::select::RETRY`]; the kernel's own roaming does the rest;
//! - there is no relay: the kernel cannot frame or unframe relayed
//!   datagrams, so relays are ignored.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::device::{
    Device, DeviceStatus, Gossip, PeerConfig, PeerControl, PeerState, SharedStatus,
};
use super::kernel::{KernelDevice, KernelError};
use super::select::{Path, Selector};
use super::wire::{self, Message};

/// Aborts a task when dropped.
pub struct Task(pub tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

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
        _reader: Task,
    },
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
            tracing::error!("mesh: device stopped: {}", crate::error_chain(&e));
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
        Ok(Started {
            datapath: Datapath::Kernel {
                device,
                applied: Vec::new(),
                paths: HashMap::new(),
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
            Datapath::User { status, .. } => {
                Ok(status.lock().unwrap_or_else(|e| e.into_inner()).clone())
            }
            Datapath::Kernel { device, .. } => device.status().await,
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
                ..
            } => {
                if *applied != configs {
                    device.set_peers(&configs).await?;
                    paths.retain(|k, _| configs.iter().any(|c| c.public_key == *k));
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
                        if let Some(current) = peer.endpoint {
                            path.received(current, now);
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
