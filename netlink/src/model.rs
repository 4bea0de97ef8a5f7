//! The kernel's links, addresses and routes as plain data, and the
//! operations that change them: what the reconciler plans with (no
//! netlink here, so planning is unit-tested without a kernel) and what
//! [`crate::state`] reads and carries out.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A link networkd does not create (a NIC, a veth).
    Existing,
    Vlan {
        parent: String,
        id: u16,
    },
    Bond {
        lacp: bool,
    },
    Bridge,
    Dummy,
}

impl Kind {
    /// The kernel's `IFLA_INFO_KIND` for a link of this kind.
    pub fn info_kind(&self) -> Option<&'static str> {
        match self {
            Self::Existing => None,
            Self::Vlan { .. } => Some("vlan"),
            Self::Bond { .. } => Some("bond"),
            Self::Bridge => Some("bridge"),
            Self::Dummy => Some("dummy"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredLink {
    pub name: String,
    pub kind: Kind,
    pub mtu: Option<u32>,
    /// The bond or bridge this link is a member of.
    pub controller: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Addr {
    pub ifname: String,
    pub net: IpNet,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteSpec {
    pub ifname: String,
    pub dst: IpNet,
    pub gateway: Option<IpAddr>,
    pub metric: u32,
}

/// One link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActualLink {
    pub index: u32,
    pub name: String,
    pub info_kind: Option<String>,
    pub mtu: Option<u32>,
    /// Administratively up (IFF_UP).
    pub up: bool,
    pub controller: Option<u32>,
    pub mac: String,
    pub driver: Option<String>,
    /// The device's bus path and its parents' (`0000:00:03.0`, `virtio0`).
    pub bus_paths: Vec<String>,
}

/// The state the kernel reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actual {
    pub links: Vec<ActualLink>,
    pub addresses: BTreeSet<Addr>,
    /// Routes carrying networkd's protocol number only.
    pub routes: BTreeSet<RouteSpec>,
}

impl Actual {
    pub fn link(&self, name: &str) -> Option<&ActualLink> {
        self.links.iter().find(|l| l.name == name)
    }
}

/// One change; the reconciler's plan is a list of them, executed in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    CreateLink(DesiredLink),
    SetController { ifname: String, controller: String },
    SetMtu { ifname: String, mtu: u32 },
    SetUp { ifname: String },
    DelRoute(RouteSpec),
    AddAddress(Addr),
    DelAddress(Addr),
    AddRoute(RouteSpec),
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::CreateLink(l) => write!(f, "create {} ({:?})", l.name, l.kind),
            Self::SetController { ifname, controller } => {
                write!(f, "{ifname}: member of {controller}")
            }
            Self::SetMtu { ifname, mtu } => write!(f, "{ifname}: mtu {mtu}"),
            Self::SetUp { ifname } => write!(f, "{ifname}: up"),
            Self::DelAddress(a) => write!(f, "{}: remove {}", a.ifname, a.net),
            Self::AddAddress(a) => write!(f, "{}: add {}", a.ifname, a.net),
            Self::DelRoute(r) => write!(f, "{}: remove route {}", r.ifname, r.dst),
            Self::AddRoute(r) => match r.gateway {
                Some(gw) => write!(f, "{}: route {} via {gw}", r.ifname, r.dst),
                None => write!(f, "{}: route {} on-link", r.ifname, r.dst),
            },
        }
    }
}
