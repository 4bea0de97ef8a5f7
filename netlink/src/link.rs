//! Links: finding the one to configure and bringing links up.

use std::path::Path;
use std::time::Duration;

use futures::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage};
use rtnetlink::{Handle, LinkUnspec};

/// What networkd needs to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    pub mac: Vec<u8>,
    pub ether: bool,
    pub loopback: bool,
    pub mtu: Option<u32>,
}

impl LinkInfo {
    /// `None` for a message without a name, which the kernel never sends
    /// for a real link.
    pub fn from_message(msg: &LinkMessage) -> Option<LinkInfo> {
        let mut name = None;
        let mut mac = Vec::new();
        let mut mtu = None;
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::Address(a) => mac = a.clone(),
                LinkAttribute::Mtu(m) => mtu = Some(*m),
                _ => {}
            }
        }
        Some(LinkInfo {
            index: msg.header.index,
            name: name?,
            mac,
            ether: msg.header.link_layer_type == LinkLayerType::Ether,
            loopback: msg.header.flags.contains(LinkFlags::Loopback),
            mtu,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("listing links")]
    List {
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{ifname}: setting link up")]
    SetUp {
        ifname: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{ifname}: setting MTU {mtu}")]
    SetMtu {
        ifname: String,
        mtu: u32,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("no link named {ifname}")]
    NotFound { ifname: String },
}

/// Which link to configure.
///
/// With a name (the `ip=` device field) that link. Otherwise the first
/// Ethernet link by ifindex that is backed by a device: virtual links
/// (bridges, veth, vxlan — all `ether` too) have no
/// `/sys/class/net/NAME/device`, and lowest ifindex is the boot order of
/// the NICs, which is stable across reboots of the same machine.
pub fn pick<'a>(links: &'a [LinkInfo], wanted: Option<&str>, sysfs: &Path) -> Option<&'a LinkInfo> {
    match wanted {
        Some(name) => links.iter().find(|l| l.name == name),
        None => links
            .iter()
            .filter(|l| l.ether && !l.loopback)
            .filter(|l| {
                sysfs
                    .join("class/net")
                    .join(&l.name)
                    .join("device")
                    .exists()
            })
            .min_by_key(|l| l.index),
    }
}

/// All links the kernel knows.
pub async fn list(handle: &Handle) -> Result<Vec<LinkInfo>, LinkError> {
    let msgs: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|source| LinkError::List { source })?;
    Ok(msgs.iter().filter_map(LinkInfo::from_message).collect())
}

/// The link named `name`.
pub async fn by_name(handle: &Handle, name: &str) -> Result<LinkInfo, LinkError> {
    list(handle)
        .await?
        .into_iter()
        .find(|l| l.name == name)
        .ok_or_else(|| LinkError::NotFound {
            ifname: name.to_owned(),
        })
}

/// Waits until [`pick`] finds a link. The NIC may appear only after its
/// driver module (virtio_net) has been loaded by init, a moment after we
/// start; re-listing with a short, growing delay costs nothing once found
/// and needs no second netlink socket. Logs once that it is waiting.
pub async fn wait_for(
    handle: &Handle,
    wanted: Option<&str>,
    sysfs: &Path,
) -> Result<LinkInfo, LinkError> {
    let mut delay = Duration::from_millis(50);
    let mut logged = false;
    loop {
        let links = list(handle).await?;
        if let Some(link) = pick(&links, wanted, sysfs) {
            return Ok(link.clone());
        }
        if !logged {
            match wanted {
                Some(name) => tracing::info!("waiting for link {name}"),
                None => tracing::info!("waiting for an Ethernet link"),
            }
            logged = true;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

/// Sets `link` administratively up.
pub async fn set_up(handle: &Handle, link: &LinkInfo) -> Result<(), LinkError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(link.index).up().build())
        .execute()
        .await
        .map_err(|source| LinkError::SetUp {
            ifname: link.name.clone(),
            source,
        })
}

/// Sets the MTU of `link`.
pub async fn set_mtu(handle: &Handle, link: &LinkInfo, mtu: u32) -> Result<(), LinkError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(link.index).mtu(mtu).build())
        .execute()
        .await
        .map_err(|source| LinkError::SetMtu {
            ifname: link.name.clone(),
            mtu,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, ether: bool, loopback: bool) -> LinkInfo {
        LinkInfo {
            index,
            name: name.into(),
            mac: vec![0x52, 0x54, 0, 0, 0, index as u8],
            ether,
            loopback,
            mtu: Some(1500),
        }
    }

    #[test]
    fn picks_first_device_backed_ethernet() {
        let sysfs = tempfile::tempdir().unwrap();
        for name in ["eth1", "eth0", "wlan0"] {
            std::fs::create_dir_all(sysfs.path().join("class/net").join(name).join("device"))
                .unwrap();
        }
        // A veth/bridge is ether but has no device directory.
        std::fs::create_dir_all(sysfs.path().join("class/net/br0")).unwrap();
        let links = vec![
            link(1, "lo", false, true),
            link(2, "br0", true, false),
            link(4, "eth1", true, false),
            link(3, "eth0", true, false),
            link(5, "wlan0", false, false),
        ];
        assert_eq!(
            pick(&links, None, sysfs.path()).map(|l| l.name.as_str()),
            Some("eth0")
        );
        assert_eq!(
            pick(&links, Some("eth1"), sysfs.path()).map(|l| l.index),
            Some(4)
        );
        assert!(pick(&links, Some("eth9"), sysfs.path()).is_none());
        assert!(pick(&links[..2], None, sysfs.path()).is_none());
    }
}
