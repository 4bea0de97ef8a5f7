//! The WireGuard mesh datapath, in userspace.
//!
//! # Background
//! Nodes reach each other's node and pod networks through a WireGuard
//! mesh. Hosts may lack the kernel module (this build machine does), so
//! the datapath runs in networkd: boringtun's I/O-free noise core
//! (`Tunn`: encapsulate / decapsulate / update_timers) under a tokio loop
//! of ours, over a TUN device and one UDP socket. boringtun's own `device`
//! feature is left off: it runs its own epoll threads and a wg control
//! socket, where we want one task in networkd's runtime and our own
//! resources.
//!
//! # Design
//! - [`controller`]: follows `cluster.mesh`, publishes and lists sealed
//!   records, gossips them, turns them into peers ([`peers`]), routes
//!   their networks ([`routing`]) and publishes the resources ([`status`]).
//! - [`device`]: the loop; [`select`] picks each peer's path (candidates,
//!   then relays); [`wire`] frames relayed datagrams and gossip on the
//!   same port.
//! - [`keys`]: the node's X25519 key pair, kept on STATE; the mesh
//!   address derives from it and the cluster id (slate-discovery).
//! - [`tun`], [`udp`]: the TUN device on tokio's reactor; the dual-stack
//!   UDP socket, with segmentation offload (GSO) to send a run of
//!   datagrams in one call and GRO to receive one.
//! - [`ping`]: the echo request that makes a quiet peer answer.
//! - [`offload`]: cutting the kernel's 64 KiB TCP segments from the TUN
//!   into packets, and joining decrypted packets back for it.
//! - [`link`]: address, MTU (underlying − 80) and up, over rtnetlink.
//! - [`routing`]: the policy rule and table that send peers' networks
//!   into the mesh link but not the mesh's own (marked) UDP, and the
//!   `cluster.mesh.routeFilter` selection.
//! - [`kernel`]: the same datapath in the kernel's WireGuard, configured
//!   over netlink, where the module exists (faster; no TUN, no loop).
//!
//! # Limitations
//! See docs/mesh.md. Allowed-IP lookup is a linear scan. No preshared
//! keys. A handshake initiation costs one DH before we know whether it is
//! from a peer (MAC1 and the shared rate limiter come first, as in
//! boringtun's device).

pub mod controller;
pub mod datapath;
pub mod device;
pub mod kernel;
pub mod keys;
pub mod link;
pub mod offload;
pub mod peers;
pub mod ping;
pub mod resources;
pub mod routing;
pub mod select;
pub mod settings;
pub mod tun;
pub mod udp;
pub mod wire;

/// The mesh's UDP port.
pub const PORT: u16 = 51820;
