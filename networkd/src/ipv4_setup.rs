//! Applying an IPv4 configuration (static or from a DHCP lease) to a link:
//! address, routes, MTU, and the ready file; the hostname and name servers
//! it brings go to [`crate::names`].
//!
//! Routes carry the protocol of their source (`dhcp` or `static`) so later
//! code, and an operator with `ip route`, can tell ours from anyone else's
//! and remove only what we added.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use netlink_packet_route::address::{AddressAttribute, CacheInfo};
use netlink_packet_route::route::{RouteProtocol, RouteScope};
use rtnetlink::{Handle, RouteMessageBuilder};

use crate::ipv4;
use crate::link::{self, LinkInfo};
use crate::names::{Contribution, SharedNames};
use crate::ready::{self, SharedReady, Source};

/// Below this an MTU from the network is more likely a mistake than a real
/// link (576 is the datagram size every IPv4 host must accept).
const MIN_MTU: u16 = 576;

/// The kernel's "forever" for address lifetimes.
const INFINITY_LIFE_TIME: u32 = u32::MAX;

/// A route to add: `destination/prefix_len` via `gateway`, or on-link when
/// the gateway is `None` (RFC 3442's router 0.0.0.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub destination: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
}

impl Route {
    pub fn default_via(gateway: Ipv4Addr) -> Route {
        Route {
            destination: Ipv4Addr::UNSPECIFIED,
            prefix_len: 0,
            gateway: Some(gateway),
        }
    }
}

/// Everything one source wants on one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    pub source: Source,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    /// `None`: forever. For a lease, the kernel removes the address itself at
    /// the end, so even a networkd that died cannot keep a stale address.
    pub lifetime: Option<Duration>,
    pub routes: Vec<Route>,
    pub dns: Vec<Ipv4Addr>,
    pub search: Option<String>,
    pub hostname: Option<String>,
    pub mtu: Option<u16>,
    /// DHCP server, for the log line.
    pub server: Option<Ipv4Addr>,
}

impl Setup {
    /// The one console line announcing the address, e.g.
    /// `eth0: 10.0.2.15/24 via dhcp from 10.0.2.2, gateway 10.0.2.2, dns 10.0.2.3`.
    pub fn summary(&self, ifname: &str) -> String {
        let mut s = format!(
            "{ifname}: {}/{} via {}",
            self.address, self.prefix_len, self.source
        );
        if let Some(server) = self.server {
            let _ = write!(s, " from {server}");
        }
        if let Some(gw) = self
            .routes
            .iter()
            .find(|r| r.prefix_len == 0)
            .and_then(|r| r.gateway)
        {
            let _ = write!(s, ", gateway {gw}");
        }
        if !self.dns.is_empty() {
            let dns: Vec<String> = self.dns.iter().map(ToString::to_string).collect();
            let _ = write!(s, ", dns {}", dns.join(" "));
        }
        s
    }

    fn protocol(&self) -> RouteProtocol {
        match self.source {
            Source::Dhcp => RouteProtocol::Dhcp,
            Source::Static | Source::Config => RouteProtocol::Static,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{ifname}: adding address {address}/{prefix_len}")]
    AddAddress {
        ifname: String,
        address: Ipv4Addr,
        prefix_len: u8,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{ifname}: removing address {address}/{prefix_len}")]
    DelAddress {
        ifname: String,
        address: Ipv4Addr,
        prefix_len: u8,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{ifname}: adding route {destination}/{prefix_len} via {gateway:?}")]
    AddRoute {
        ifname: String,
        destination: Ipv4Addr,
        prefix_len: u8,
        gateway: Option<Ipv4Addr>,
        #[source]
        source: rtnetlink::Error,
    },
    #[error(transparent)]
    Link(#[from] link::LinkError),
    #[error(transparent)]
    Ready(#[from] ready::ReadyError),
}

/// Adds (or, replacing, refreshes) `address/prefix_len` on link `index`
/// with `(preferred, valid)` lifetimes in seconds, or forever with `None`.
/// With a lifetime the kernel removes the address itself at the end, so
/// even a networkd that died cannot keep a stale lease.
pub async fn add_address(
    handle: &Handle,
    index: u32,
    address: IpAddr,
    prefix_len: u8,
    lifetimes: Option<(u32, u32)>,
) -> Result<(), rtnetlink::Error> {
    let mut req = handle
        .address()
        .add(index, address, prefix_len)
        // Replace: a renewal only refreshes the lifetimes, and a restart
        // of networkd finds its own address still there.
        .replace();
    let (preferred, valid) = lifetimes.unwrap_or((INFINITY_LIFE_TIME, INFINITY_LIFE_TIME));
    let mut cache = CacheInfo::default();
    cache.ifa_preferred = preferred;
    cache.ifa_valid = valid;
    req.message_mut()
        .attributes
        .push(AddressAttribute::CacheInfo(cache));
    req.execute().await
}

/// Applies [`Setup`]s through netlink and the files they feed.
pub struct Applier {
    handle: Handle,
    ready: SharedReady,
    /// Hostname and resolv.conf, decided with the other sources.
    names: SharedNames,
}

impl Applier {
    pub fn new(handle: Handle, ready: SharedReady, names: SharedNames) -> Self {
        Applier {
            handle,
            ready,
            names,
        }
    }

    fn ready(&self) -> std::sync::MutexGuard<'_, ready::ReadyFile> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves `link` from `old` (what this source applied last, if anything)
    /// to `new`. Failing to add the address is an error; every later step
    /// is logged and skipped, so a bad MTU never costs the default route.
    pub async fn apply(
        &mut self,
        link: &LinkInfo,
        old: Option<&Setup>,
        new: &Setup,
    ) -> Result<(), ApplyError> {
        if let Some(old) = old {
            if old.address != new.address || old.prefix_len != new.prefix_len {
                self.remove_network(link, old).await;
            } else {
                for route in old.routes.iter().filter(|r| !new.routes.contains(r)) {
                    self.del_route(link, old, route).await;
                }
            }
        }
        self.add_address(link, new).await?;
        for route in &new.routes {
            if let Err(e) = self.add_route(link, new, route).await {
                tracing::warn!("{}", crate::error_chain(&e));
            }
        }
        // `link.mtu` is from when the link was found; setting an unchanged
        // MTU again is a no-op for the kernel.
        if let Some(mtu) = new
            .mtu
            .filter(|m| *m >= MIN_MTU)
            .map(u32::from)
            .filter(|m| link.mtu != Some(*m))
        {
            warn_on_err(
                link::set_mtu(&self.handle, link, mtu)
                    .await
                    .map_err(ApplyError::from),
            );
        }
        // A static `ip=` setup is the cmdline's say; a lease is its link's.
        let contribution = Contribution {
            hostname: new.hostname.clone(),
            nameservers: new.dns.iter().copied().map(IpAddr::V4).collect(),
            search: new.search.iter().cloned().collect(),
        };
        match new.source {
            Source::Dhcp => self.names.set_lease(&link.name, Some(contribution)),
            Source::Static => self.names.set_cmdline(contribution),
            // The reconciler hands the config's names over itself.
            Source::Config => {}
        }
        self.ready().set(ready::Entry {
            ifname: link.name.clone(),
            address: new.address,
            prefix_len: new.prefix_len,
            source: new.source,
        })?;
        Ok(())
    }

    /// Removes what `setup` added (lease lost); the ready file follows.
    pub async fn remove(&mut self, link: &LinkInfo, setup: &Setup) -> Result<(), ApplyError> {
        self.remove_network(link, setup).await;
        if setup.source == Source::Dhcp {
            self.names.set_lease(&link.name, None);
        }
        self.ready().remove(&link.name, setup.source)?;
        Ok(())
    }

    async fn remove_network(&self, link: &LinkInfo, setup: &Setup) {
        for route in &setup.routes {
            self.del_route(link, setup, route).await;
        }
        let msg = rtnetlink::AddressMessageBuilder::<Ipv4Addr>::new()
            .index(link.index)
            .address(setup.address, setup.prefix_len)
            .build();
        if let Err(source) = self.handle.address().del(msg).execute().await {
            // Gone already: the kernel expired it with its lifetime.
            if slate_netlink::errno(&source) != Some(libc::EADDRNOTAVAIL) {
                let e = ApplyError::DelAddress {
                    ifname: link.name.clone(),
                    address: setup.address,
                    prefix_len: setup.prefix_len,
                    source,
                };
                tracing::warn!("{}", crate::error_chain(&e));
            }
        }
    }

    async fn add_address(&self, link: &LinkInfo, setup: &Setup) -> Result<(), ApplyError> {
        let life = setup
            .lifetime
            .map(|d| u32::try_from(d.as_secs()).unwrap_or(INFINITY_LIFE_TIME));
        add_address(
            &self.handle,
            link.index,
            IpAddr::V4(setup.address),
            setup.prefix_len,
            life.map(|l| (l, l)),
        )
        .await
        .map_err(|source| ApplyError::AddAddress {
            ifname: link.name.clone(),
            address: setup.address,
            prefix_len: setup.prefix_len,
            source,
        })
    }

    fn route_message(
        link: &LinkInfo,
        setup: &Setup,
        route: &Route,
    ) -> netlink_packet_route::route::RouteMessage {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(route.destination, route.prefix_len)
            .output_interface(link.index)
            .protocol(setup.protocol());
        match route.gateway {
            Some(gw) => {
                b = b.gateway(gw);
                // A gateway outside our subnet (a /32 lease, as some clouds
                // hand out) is still on this link: say so, or the kernel
                // refuses the route as unreachable.
                if !ipv4::same_subnet(setup.address, setup.prefix_len, gw) {
                    b = b.onlink();
                }
            }
            None => b = b.scope(RouteScope::Link),
        }
        b.pref_source(setup.address).build()
    }

    async fn add_route(
        &self,
        link: &LinkInfo,
        setup: &Setup,
        route: &Route,
    ) -> Result<(), ApplyError> {
        self.handle
            .route()
            .add(Self::route_message(link, setup, route))
            .replace()
            .execute()
            .await
            .map_err(|source| ApplyError::AddRoute {
                ifname: link.name.clone(),
                destination: route.destination,
                prefix_len: route.prefix_len,
                gateway: route.gateway,
                source,
            })
    }

    async fn del_route(&self, link: &LinkInfo, setup: &Setup, route: &Route) {
        let msg = Self::route_message(link, setup, route);
        if let Err(e) = self.handle.route().del(msg).execute().await {
            // ESRCH: removed already, with the address it went through.
            if slate_netlink::errno(&e) != Some(libc::ESRCH) {
                tracing::debug!(
                    "{}: removing route {}/{}: {e}",
                    link.name,
                    route.destination,
                    route.prefix_len
                );
            }
        }
    }
}

fn warn_on_err(r: Result<(), ApplyError>) {
    if let Err(e) = r {
        tracing::warn!("{}", crate::error_chain(&e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line() {
        let ip = |s: &str| -> Ipv4Addr { s.parse().unwrap() };
        let setup = Setup {
            source: Source::Dhcp,
            address: ip("10.0.2.15"),
            prefix_len: 24,
            lifetime: Some(Duration::from_secs(86400)),
            routes: vec![
                Route {
                    destination: ip("10.1.0.0"),
                    prefix_len: 16,
                    gateway: None,
                },
                Route::default_via(ip("10.0.2.2")),
            ],
            dns: vec![ip("10.0.2.3")],
            search: None,
            hostname: None,
            mtu: None,
            server: Some(ip("10.0.2.2")),
        };
        assert_eq!(
            setup.summary("eth0"),
            "eth0: 10.0.2.15/24 via dhcp from 10.0.2.2, gateway 10.0.2.2, dns 10.0.2.3"
        );
        let bare = Setup {
            source: Source::Static,
            routes: vec![],
            dns: vec![],
            server: None,
            ..setup
        };
        assert_eq!(bare.summary("eth0"), "eth0: 10.0.2.15/24 via static");
    }
}
