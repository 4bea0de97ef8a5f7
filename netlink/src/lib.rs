//! What networkd's reconciler and the mesh (its routing and its kernel
//! WireGuard backend) share of netlink:
//! - [`link`]: links by name, up, MTU, waiting for the first NIC;
//! - [`model`]: the kernel's links, addresses and routes as data, and the
//!   operations on them;
//! - [`state`]: reading them and carrying operations out over rtnetlink,
//!   [`PROTO_SLATE`], the event groups worth a re-read;
//! - [`kernel`]: those two calls as a trait the reconciler runs against,
//!   so tests can give it a fake kernel;
//! - [`genl`]: generic netlink requests and the family lookup;
//! - [`errno`]: the error number of a refused request.

pub mod genl;
pub mod kernel;
pub mod link;
pub mod model;
pub mod state;

pub use state::PROTO_SLATE;

/// The errno of a netlink error answer, positive.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => Some(msg.raw_code().abs()),
        _ => None,
    }
}
