//! Joining a cluster with a join token (docs/join.md).
//!
//! - [`registry`]: the control plane's side, on its trust service and on
//!   machined's socket ([`api`]): tokens, registrations, accept.
//! - [`agent`]: the joining node's side.
//! - [`store`]: the cluster's etcd, where tokens and registrations live.

pub mod agent;
pub mod api;
pub mod facts;
pub mod records;
pub mod registry;
pub mod store;

pub use registry::Registry;
pub use store::Store;
