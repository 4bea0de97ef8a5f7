//! Links, addresses and routes over rtnetlink: reading them ([`read`],
//! [`main_routes`]) and carrying out [`Op`]s ([`execute`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use futures::TryStreamExt as _;
use ipnet::IpNet;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{BondMode, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::{
    Handle, LinkBond, LinkBridge, LinkDummy, LinkUnspec, LinkVlan, RouteMessageBuilder,
};

use crate::model::{Actual, ActualLink, Addr, DesiredLink, Kind, Op, RouteSpec};

/// The rtnetlink groups whose events may change what networkd keeps or
/// shows.
pub const EVENT_GROUPS: [rtnetlink::MulticastGroup; 5] = [
    rtnetlink::MulticastGroup::Link,
    rtnetlink::MulticastGroup::Ipv4Ifaddr,
    rtnetlink::MulticastGroup::Ipv6Ifaddr,
    rtnetlink::MulticastGroup::Ipv4Route,
    rtnetlink::MulticastGroup::Ipv6Route,
];

/// Waits for the next burst of kernel events and swallows the rest of it
/// (a link going up brings addresses and routes): one re-read per burst.
/// `false` when the event source is gone.
pub async fn next_burst<S>(events: &mut S) -> bool
where
    S: futures::Stream + Unpin,
{
    use futures::StreamExt as _;
    if events.next().await.is_none() {
        return false;
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    while let Ok(Some(_)) = tokio::time::timeout(std::time::Duration::ZERO, events.next()).await {}
    true
}

/// Protocol number of networkd's routes (`ip route` shows `proto 115`):
/// how networkd tells its routes from the kernel's, DHCP's and anyone
/// else's, and removes only its own. Unassigned in iproute2's rt_protos.
pub const PROTO_SLATE: u8 = 115;

/// The main routing table.
const MAIN_TABLE: u8 = 254;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("reading {what} from the kernel")]
    Dump {
        what: &'static str,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{op}")]
    Op {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{op}: link {ifname} does not exist")]
    NoLink { op: String, ifname: String },
}

/// Everything the reconciler compares against, read in one go.
pub async fn read(handle: &Handle, sysfs: &Path) -> Result<Actual, NetlinkError> {
    let dump = |what| move |source| NetlinkError::Dump { what, source };
    let mut links = Vec::new();
    let mut stream = handle.link().get().execute();
    while let Some(msg) = stream.try_next().await.map_err(dump("links"))? {
        let mut l = ActualLink {
            index: msg.header.index,
            name: String::new(),
            info_kind: None,
            mtu: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            controller: None,
            mac: String::new(),
            driver: None,
            bus_paths: Vec::new(),
        };
        for attr in msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => l.name = n,
                LinkAttribute::Mtu(m) => l.mtu = Some(m),
                LinkAttribute::Controller(c) => l.controller = Some(c),
                LinkAttribute::Address(a) => l.mac = mac(&a),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(k) = info {
                            l.info_kind = Some(k.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        (l.driver, l.bus_paths) = device_of(sysfs, &l.name);
        links.push(l);
    }
    let names: BTreeMap<u32, String> = links.iter().map(|l| (l.index, l.name.clone())).collect();

    let mut addresses = BTreeSet::new();
    let mut stream = handle.address().get().execute();
    while let Some(msg) = stream.try_next().await.map_err(dump("addresses"))? {
        let Some(ifname) = names.get(&msg.header.index) else {
            continue;
        };
        // IFA_LOCAL is the address on point-to-point links, where
        // IFA_ADDRESS is the peer; elsewhere they are the same.
        let mut ip = None;
        for attr in &msg.attributes {
            match attr {
                AddressAttribute::Local(a) => ip = Some(*a),
                AddressAttribute::Address(a) if ip.is_none() => ip = Some(*a),
                _ => {}
            }
        }
        if let Some(net) = ip.and_then(|ip| IpNet::new(ip, msg.header.prefix_len).ok()) {
            addresses.insert(Addr {
                ifname: ifname.clone(),
                net,
            });
        }
    }

    let routes = main_routes(handle, &names)
        .await?
        .into_iter()
        .filter(|r| r.protocol == RouteProtocol::from(PROTO_SLATE) && !r.spec.ifname.is_empty())
        .map(|r| r.spec)
        .collect();
    Ok(Actual {
        links,
        addresses,
        routes,
    })
}

/// A route of the main table as the kernel reports it.
#[derive(Debug, Clone)]
pub struct KernelRoute {
    /// `ifname` is empty for a route without an output link.
    pub spec: RouteSpec,
    pub protocol: RouteProtocol,
}

/// Every IPv4 and IPv6 route of the main table (local and broadcast routes
/// live in other tables and are the kernel's bookkeeping).
pub async fn main_routes(
    handle: &Handle,
    names: &BTreeMap<u32, String>,
) -> Result<Vec<KernelRoute>, NetlinkError> {
    let mut out = Vec::new();
    for template in [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ] {
        let mut stream = handle.route().get(template).execute();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(|source| NetlinkError::Dump {
                what: "routes",
                source,
            })?
        {
            if let Some(route) = parse_route(&msg, names) {
                out.push(route);
            }
        }
    }
    Ok(out)
}

fn parse_route(msg: &RouteMessage, names: &BTreeMap<u32, String>) -> Option<KernelRoute> {
    let (mut dst, mut gateway, mut oif, mut metric) = (None, None, None, 0);
    let mut table = u32::from(msg.header.table);
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst = ip_of(a),
            RouteAttribute::Gateway(a) => gateway = ip_of(a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    if table != u32::from(MAIN_TABLE) {
        return None;
    }
    let dst = dst.unwrap_or(match msg.header.address_family {
        netlink_packet_route::AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    });
    Some(KernelRoute {
        spec: RouteSpec {
            ifname: oif.and_then(|i| names.get(&i).cloned()).unwrap_or_default(),
            dst: IpNet::new(dst, msg.header.destination_prefix_length).ok()?,
            gateway,
            metric,
        },
        protocol: msg.header.protocol,
    })
}

pub fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The driver and bus paths of a link from sysfs; virtual links have none.
fn device_of(sysfs: &Path, ifname: &str) -> (Option<String>, Vec<String>) {
    let device = sysfs.join("class/net").join(ifname).join("device");
    let driver = std::fs::read_link(device.join("driver"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    // `device` → …/0000:00:03.0/virtio1: the device and its parent both
    // name the bus position, and users may give either.
    let bus_paths = std::fs::canonicalize(&device)
        .map(|p| {
            p.ancestors()
                .take(2)
                .filter_map(|a| a.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    (driver, bus_paths)
}

/// Carries out one operation.
pub async fn execute(handle: &Handle, op: &Op) -> Result<(), NetlinkError> {
    let x = Execution { handle, op };
    match op {
        Op::CreateLink(l) => x.create_link(l).await,
        Op::SetController { ifname, controller } => x.set_controller(ifname, controller).await,
        Op::SetMtu { ifname, mtu } => {
            let i = x.index(ifname).await?;
            x.set_link(LinkUnspec::new_with_index(i).mtu(*mtu).build())
                .await
        }
        Op::SetUp { ifname } => {
            let i = x.index(ifname).await?;
            x.set_link(LinkUnspec::new_with_index(i).up().build()).await
        }
        Op::AddAddress(a) => x.add_address(a).await,
        Op::DelAddress(a) => x.del_address(a).await,
        Op::AddRoute(r) => x.add_route(r).await,
        Op::DelRoute(r) => x.del_route(r).await,
    }
}

/// One [`Op`] being carried out: every error it meets is reported as
/// that op's.
struct Execution<'a> {
    handle: &'a Handle,
    op: &'a Op,
}

impl Execution<'_> {
    fn fail(&self, source: rtnetlink::Error) -> NetlinkError {
        NetlinkError::Op {
            op: self.op.to_string(),
            source,
        }
    }

    /// The index of the link called `name`.
    async fn index(&self, name: &str) -> Result<u32, NetlinkError> {
        let mut stream = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match stream.try_next().await {
            Ok(Some(msg)) => Ok(msg.header.index),
            _ => Err(NetlinkError::NoLink {
                op: self.op.to_string(),
                ifname: name.to_owned(),
            }),
        }
    }

    async fn set_link(&self, msg: LinkMessage) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| self.fail(e))
    }

    async fn create_link(&self, l: &DesiredLink) -> Result<(), NetlinkError> {
        let msg = match &l.kind {
            Kind::Existing => return Ok(()),
            Kind::Vlan { parent, id } => {
                LinkVlan::new(&l.name, self.index(parent).await?, *id).build()
            }
            Kind::Bond { lacp } => LinkBond::new(&l.name)
                .mode(if *lacp {
                    BondMode::Ieee8023Ad
                } else {
                    BondMode::ActiveBackup
                })
                .miimon(100)
                .build(),
            Kind::Bridge => LinkBridge::new(&l.name).build(),
            Kind::Dummy => LinkDummy::new(&l.name).build(),
        };
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| self.fail(e))
    }

    async fn set_controller(&self, ifname: &str, controller: &str) -> Result<(), NetlinkError> {
        let (i, c) = (self.index(ifname).await?, self.index(controller).await?);
        let link = self.handle.link();
        // A bond takes only members that are down; up again after.
        link.set(LinkUnspec::new_with_index(i).down().build())
            .execute()
            .await
            .map_err(|e| self.fail(e))?;
        let joined = link
            .set(LinkUnspec::new_with_index(i).controller(c).build())
            .execute()
            .await;
        // Up again whether or not it joined: a failed join must not
        // leave the link down.
        let up = link
            .set(LinkUnspec::new_with_index(i).up().build())
            .execute()
            .await;
        joined.and(up).map_err(|e| self.fail(e))
    }

    async fn add_address(&self, a: &Addr) -> Result<(), NetlinkError> {
        if a.net.addr().is_ipv4() {
            promote_secondaries(&a.ifname);
        }
        self.handle
            .address()
            .add(
                self.index(&a.ifname).await?,
                a.net.addr(),
                a.net.prefix_len(),
            )
            .replace()
            .execute()
            .await
            .map_err(|e| self.fail(e))
    }

    async fn del_address(&self, a: &Addr) -> Result<(), NetlinkError> {
        let Ok(i) = self.index(&a.ifname).await else {
            return Ok(()); // the link is gone, and the address with it
        };
        if a.net.addr().is_ipv4() {
            promote_secondaries(&a.ifname);
        }
        let msg = match a.net.addr() {
            IpAddr::V4(v4) => rtnetlink::AddressMessageBuilder::<Ipv4Addr>::new()
                .index(i)
                .address(v4, a.net.prefix_len())
                .build(),
            IpAddr::V6(v6) => rtnetlink::AddressMessageBuilder::<Ipv6Addr>::new()
                .index(i)
                .address(v6, a.net.prefix_len())
                .build(),
        };
        gone_is_fine(
            self.handle.address().del(msg).execute().await,
            libc::EADDRNOTAVAIL,
        )
        .map_err(|e| self.fail(e))
    }

    async fn add_route(&self, r: &RouteSpec) -> Result<(), NetlinkError> {
        // No replace: the kernel keys a replace on destination and
        // metric alone, so it would overwrite another owner's route
        // (DHCP's, the kernel's) or another link's. A clash fails and
        // is reported instead.
        let msg = route_message(r, self.index(&r.ifname).await?);
        self.handle
            .route()
            .add(msg)
            .execute()
            .await
            .map_err(|e| self.fail(e))
    }

    async fn del_route(&self, r: &RouteSpec) -> Result<(), NetlinkError> {
        let Ok(i) = self.index(&r.ifname).await else {
            return Ok(()); // the link is gone, and its routes with it
        };
        gone_is_fine(
            self.handle.route().del(route_message(r, i)).execute().await,
            libc::ESRCH,
        )
        .map_err(|e| self.fail(e))
    }
}

/// Without `promote_secondaries`, removing an IPv4 address removes every
/// other address of its subnet on the link with it (the kernel's
/// "secondaries"), someone else's included. systemd-networkd sets it for
/// the same reason. Best effort: a failure here only means the old
/// behaviour.
fn promote_secondaries(ifname: &str) {
    let knob = format!("/proc/sys/net/ipv4/conf/{ifname}/promote_secondaries");
    if let Err(e) = std::fs::write(&knob, "1") {
        tracing::debug!("{knob}: {e}");
    }
}

/// A removal that finds nothing to remove (the kernel took it already,
/// with an address or a link) has done its job.
fn gone_is_fine(result: Result<(), rtnetlink::Error>, errno: i32) -> Result<(), rtnetlink::Error> {
    match result {
        Err(e) if crate::errno(&e) == Some(errno) => Ok(()),
        other => other,
    }
}

fn route_message(r: &RouteSpec, oif: u32) -> RouteMessage {
    let proto = RouteProtocol::from(PROTO_SLATE);
    match (r.dst, r.gateway) {
        (IpNet::V4(dst), gw) => {
            let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(dst.addr(), dst.prefix_len())
                .output_interface(oif)
                .protocol(proto)
                .priority(r.metric);
            match gw {
                Some(IpAddr::V4(gw)) => b = b.gateway(gw),
                _ => b = b.scope(RouteScope::Link),
            }
            b.build()
        }
        (IpNet::V6(dst), gw) => {
            let mut b = RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(dst.addr(), dst.prefix_len())
                .output_interface(oif)
                .protocol(proto)
                .priority(r.metric);
            match gw {
                Some(IpAddr::V6(gw)) => b = b.gateway(gw),
                _ => b = b.scope(RouteScope::Link),
            }
            b.build()
        }
    }
}
