//! Bringing the mesh interface up: its address, its MTU (the underlying
//! link's minus WireGuard's worst-case overhead), up.

use std::net::IpAddr;

use netlink_packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::Handle;

/// IPv6 outer header (40) + UDP (8) + WireGuard data header (16) + tag
/// (16): what a packet grows by in the mesh.
pub const OVERHEAD: u32 = 80;

#[derive(Debug, thiserror::Error)]
pub enum MeshLinkError {
    #[error(transparent)]
    Link(#[from] slate_netlink::link::LinkError),
    #[error("adding {address}/{prefix_len} to {ifname}")]
    Address {
        ifname: String,
        address: IpAddr,
        prefix_len: u8,
        #[source]
        source: rtnetlink::Error,
    },
}

/// Addresses `ifname` with `address/prefix_len` (the mesh's /64 makes the
/// route to every other mesh address), sets MTU = `underlying_mtu` −
/// [`OVERHEAD`], and sets it up. The address is usable on return.
pub async fn configure(
    handle: &Handle,
    ifname: &str,
    address: IpAddr,
    prefix_len: u8,
    underlying_mtu: u32,
) -> Result<(), MeshLinkError> {
    let link = slate_netlink::link::by_name(handle, ifname).await?;
    slate_netlink::link::set_mtu(handle, &link, underlying_mtu.saturating_sub(OVERHEAD)).await?;
    let mut req = handle
        .address()
        .add(link.index, address, prefix_len)
        .replace();
    // No duplicate address detection: the address derives from the node's
    // key, and while DAD runs the address is tentative and cannot be bound
    // (seen in the namespace test as EADDRNOTAVAIL right after bring-up).
    req.message_mut()
        .attributes
        .push(AddressAttribute::Flags(AddressFlags::Nodad));
    req.execute()
        .await
        .map_err(|source| MeshLinkError::Address {
            ifname: ifname.to_owned(),
            address,
            prefix_len,
            source,
        })?;
    slate_netlink::link::set_up(handle, &link).await?;
    Ok(())
}
