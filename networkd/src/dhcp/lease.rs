//! A DHCPv4 lease: what an ACK grants, validated, with its timers.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Message, OptionCode};

use crate::ipv4;
use crate::ipv4_setup::{Route, Setup};
use crate::ready::Source;

/// RFC 2131's "infinity" lease time.
const INFINITE: u32 = u32::MAX;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub server: Ipv4Addr,
    pub routes: Vec<Route>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub hostname: Option<String>,
    pub mtu: Option<u16>,
    /// When the REQUEST that led to this lease was sent: RFC 2131 §4.4.1
    /// counts the lease from there, so a slow ACK never makes us overstay.
    pub start: Instant,
    pub timers: Option<Timers>,
}

/// Lease timers relative to [`Lease::start`]; `None` for an infinite lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    pub t1: Duration,
    pub t2: Duration,
    pub lease: Duration,
}

impl Timers {
    /// T1/T2 from options 58/59 when they make sense (0 < T1 < T2 < lease),
    /// else RFC 2131's defaults of 0.5 and 0.875 of the lease.
    pub fn new(lease_secs: u32, t1: Option<u32>, t2: Option<u32>) -> Option<Timers> {
        if lease_secs == INFINITE {
            return None;
        }
        let lease = Duration::from_secs(lease_secs.into());
        let t2 = t2
            .filter(|t| *t > 0 && *t < lease_secs)
            .map(|t| Duration::from_secs(t.into()))
            .unwrap_or(lease * 7 / 8);
        let t1 = t1
            .filter(|t| *t > 0)
            .map(|t| Duration::from_secs(t.into()))
            .filter(|t| *t < t2)
            .unwrap_or((lease / 2).min(t2));
        Some(Timers { t1, t2, lease })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("unusable address {0}")]
    BadAddress(Ipv4Addr),
    #[error("no server identifier (option 54)")]
    NoServerId,
    #[error("no lease time (option 51)")]
    NoLeaseTime,
    #[error("lease time 0")]
    ZeroLeaseTime,
}

/// Whether `addr` can be a host address handed out by DHCP.
pub fn usable_address(addr: Ipv4Addr) -> bool {
    !(addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() || addr.is_loopback())
}

/// The server identifier of a reply, if any.
pub fn server_id(msg: &Message) -> Option<Ipv4Addr> {
    match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    }
}

impl Lease {
    /// Reads an ACK. `start` is when the REQUEST was sent.
    pub fn from_ack(msg: &Message, start: Instant) -> Result<Lease, LeaseError> {
        let address = msg.yiaddr();
        if !usable_address(address) {
            return Err(LeaseError::BadAddress(address));
        }
        let server = server_id(msg).ok_or(LeaseError::NoServerId)?;
        let opts = msg.opts();
        let lease_secs = match opts.get(OptionCode::AddressLeaseTime) {
            Some(DhcpOption::AddressLeaseTime(0)) => return Err(LeaseError::ZeroLeaseTime),
            Some(DhcpOption::AddressLeaseTime(t)) => *t,
            _ => return Err(LeaseError::NoLeaseTime),
        };
        let t1 = match opts.get(OptionCode::Renewal) {
            Some(DhcpOption::Renewal(t)) => Some(*t),
            _ => None,
        };
        let t2 = match opts.get(OptionCode::Rebinding) {
            Some(DhcpOption::Rebinding(t)) => Some(*t),
            _ => None,
        };
        // Without a usable mask: the classful default, as RFC 2131 clients
        // have always done.
        let prefix_len = match opts.get(OptionCode::SubnetMask) {
            Some(DhcpOption::SubnetMask(mask)) => ipv4::mask_to_prefix(*mask),
            _ => None,
        }
        .unwrap_or_else(|| ipv4::classful_prefix(address));

        let routes = match opts.get(OptionCode::ClasslessStaticRoute) {
            // RFC 3442: when option 121 is present the client MUST ignore
            // the Router option.
            Some(DhcpOption::ClasslessStaticRoute(routes)) => routes
                .iter()
                .map(|(net, gw)| classless_route(net.addr(), net.prefix_len(), *gw))
                .collect(),
            _ => match opts.get(OptionCode::Router) {
                Some(DhcpOption::Router(routers)) => routers
                    .iter()
                    .copied()
                    .find(|r| usable_address(*r))
                    .map(Route::default_via)
                    .into_iter()
                    .collect(),
                _ => Vec::new(),
            },
        };
        let dns = match opts.get(OptionCode::DomainNameServer) {
            Some(DhcpOption::DomainNameServer(servers)) => servers
                .iter()
                .copied()
                .filter(|s| usable_address(*s))
                .collect(),
            _ => Vec::new(),
        };
        let domain = match opts.get(OptionCode::DomainName) {
            Some(DhcpOption::DomainName(d)) => clean_name(d),
            _ => None,
        };
        let hostname = match opts.get(OptionCode::Hostname) {
            Some(DhcpOption::Hostname(h)) => clean_name(h),
            _ => None,
        };
        let mtu = match opts.get(OptionCode::InterfaceMtu) {
            Some(DhcpOption::InterfaceMtu(m)) => Some(*m),
            _ => None,
        };
        Ok(Lease {
            address,
            prefix_len,
            server,
            routes,
            dns,
            domain,
            hostname,
            mtu,
            start,
            timers: Timers::new(lease_secs, t1, t2),
        })
    }

    /// Absolute renewal, rebinding and expiry times; `None` if infinite.
    pub fn t1_at(&self) -> Option<Instant> {
        self.timers.map(|t| self.start + t.t1)
    }
    pub fn t2_at(&self) -> Option<Instant> {
        self.timers.map(|t| self.start + t.t2)
    }
    pub fn expiry(&self) -> Option<Instant> {
        self.timers.map(|t| self.start + t.lease)
    }

    /// What to apply to the link at `now`.
    pub fn setup(&self, now: Instant) -> Setup {
        Setup {
            source: Source::Dhcp,
            address: self.address,
            prefix_len: self.prefix_len,
            lifetime: self.expiry().map(|e| e.saturating_duration_since(now)),
            routes: self.routes.clone(),
            dns: self.dns.clone(),
            search: self.domain.clone(),
            hostname: self.hostname.clone(),
            mtu: self.mtu,
            server: Some(self.server),
        }
    }
}

/// One RFC 3442 route: host bits of the destination cleared (servers do send
/// `10.1.2.3/16`), router 0.0.0.0 meaning on-link.
pub fn classless_route(destination: Ipv4Addr, prefix_len: u8, router: Ipv4Addr) -> Route {
    Route {
        destination: ipv4::network(destination, prefix_len),
        prefix_len,
        gateway: Some(router).filter(|r| !r.is_unspecified()),
    }
}

/// Names from the network: some servers NUL-terminate them or end them with
/// a root dot; anything that is then not a plain DNS name is dropped.
fn clean_name(raw: &str) -> Option<String> {
    let name = raw.trim_end_matches('\0').trim_end_matches('.');
    crate::hostname::is_valid(name).then(|| name.to_owned())
}
