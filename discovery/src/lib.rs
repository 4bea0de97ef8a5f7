//! Mesh discovery: how the nodes of a Slate cluster find each other.
//!
//! # Background
//! Every node runs a WireGuard interface; to configure its peers it needs
//! each other node's public key, mesh address, endpoint candidates and the
//! networks behind it. Nodes publish that as an affiliate [`record`] and
//! read everybody else's.
//!
//! # Design
//! - [`record`]: the record, sealed with ChaCha20-Poly1305 under a key
//!   derived from the cluster secret. Only nodes read or write records.
//! - [`service`]: the discovery service, an HTTP server that keeps opaque
//!   sealed blobs per cluster with a TTL; it never holds a key.
//! - [`proof`]: the proof of cluster membership a write to a node's copy
//!   of the service carries (an HMAC under a key from the cluster secret).
//! - [`client`]: how a node publishes its record and lists the others.
//! - [`gossip`]: the table of known records a node merges from the service
//!   and from its peers, and the bundles it passes on, so the mesh heals
//!   while the service is down.
//! - [`bundle`]: the wire form of a list of sealed records.
//! - [`node`]: the service as a process (the binary, and a node's copy).
//!
//! # Limitations
//! See `docs/mesh-discovery.md`: the client speaks plain HTTP only (records
//! are sealed; the service sees only opaque blobs).
pub mod bundle;
pub mod client;
pub mod gossip;
pub mod node;
pub mod proof;
pub mod record;
pub mod service;
