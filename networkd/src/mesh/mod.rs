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
//! - [`keys`]: the node's X25519 key pair, kept on STATE; the mesh
//!   address derives from it and the cluster id (slate-discovery).
//! - [`tun`]: the TUN device on tokio's reactor.
//! - [`device`]: the loop and per-peer counters.
//! - [`link`]: address, MTU (underlying − 80) and up, over rtnetlink.
//! - [`kernel`]: the same datapath in the kernel's WireGuard, configured
//!   over netlink, where the module exists (faster; no TUN, no loop).
//!
//! # Limitations (unfinished)
//! Not yet started by [`crate::run`]: peers come from the caller (no
//! discovery, no machine config wiring, no `mesh-peers` resource yet,
//! though [`device::DeviceStatus`] holds its counters). Only the mesh
//! /64 is routed into the interface: other allowed IPs (pod CIDRs) need
//! routes and the policy routing of the design. One endpoint per peer
//! (the configured one, then the last authenticated source), no
//! candidate probing, no relay. Allowed-IP lookup is a linear scan. No
//! preshared keys. A handshake initiation costs one DH before we know
//! whether it is from a peer (MAC1 and the shared rate limiter come
//! first, as in boringtun's device).

pub mod device;
pub mod kernel;
pub mod keys;
pub mod link;
pub mod tun;

/// The mesh's UDP port.
pub const PORT: u16 = 51820;
