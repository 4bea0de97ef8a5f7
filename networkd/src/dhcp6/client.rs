//! Runs the DHCPv6 state machine on a link and applies its leases: the
//! address as a /128 with the lease's lifetimes (the on-link prefix comes
//! from router advertisements, as RFC 8415 §21.6 intends), and the name
//! servers and search domains through [`crate::names`].

use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr, SocketAddrV6};
use std::time::Instant;

use rtnetlink::Handle;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::net::UdpSocket;

use super::state::{Action, Client, Lease};
use crate::lease_loop;
use crate::link::LinkInfo;
use crate::names::{Contribution, SharedNames};

pub const CLIENT_PORT: u16 = 546;
pub const SERVER_PORT: u16 = 547;
/// All_DHCP_Relay_Agents_and_Servers.
pub const SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);
const RECV_BUFFER: usize = 2048;

#[derive(Debug, thiserror::Error)]
#[error("{ifname}: {step} on the DHCPv6 socket")]
pub struct SocketError {
    ifname: String,
    step: &'static str,
    #[source]
    source: std::io::Error,
}

/// `[::]:546` on one link (SO_BINDTODEVICE), multicast out of it.
fn bind(link: &LinkInfo) -> Result<UdpSocket, SocketError> {
    let err = |step: &'static str| {
        let ifname = link.name.clone();
        move |source| SocketError {
            ifname,
            step,
            source,
        }
    };
    let socket =
        Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).map_err(err("creating"))?;
    socket
        .set_only_v6(true)
        .map_err(err("setting IPV6_V6ONLY"))?;
    socket
        .set_reuse_address(true)
        .map_err(err("setting SO_REUSEADDR"))?;
    socket
        .bind_device(Some(link.name.as_bytes()))
        .map_err(err("setting SO_BINDTODEVICE"))?;
    socket
        .set_multicast_if_v6(link.index)
        .map_err(err("setting IPV6_MULTICAST_IF"))?;
    socket
        .bind(&SockAddr::from(SocketAddrV6::new(
            Ipv6Addr::UNSPECIFIED,
            CLIENT_PORT,
            0,
            0,
        )))
        .map_err(err("binding port 546"))?;
    socket
        .set_nonblocking(true)
        .map_err(err("setting O_NONBLOCK"))?;
    UdpSocket::from_std(socket.into()).map_err(err("registering with tokio"))
}

/// DHCPv6 on `link` for ever; returns only if the socket cannot be made.
pub async fn run(
    handle: Handle,
    link: LinkInfo,
    names: SharedNames,
) -> Result<Infallible, SocketError> {
    let socket = bind(&link)?;
    let mut client = Client::new(&link.mac, fastrand::Rng::new(), Instant::now());
    let mut applied: Option<Lease> = None;
    let mut buf = vec![0u8; RECV_BUFFER];
    let on = OnLink {
        to: SocketAddrV6::new(SERVERS, SERVER_PORT, 0, link.index),
        names_key: format!("{}/dhcp6", link.name),
        handle,
        link,
        socket,
        names,
    };
    tracing::info!("{}: starting DHCPv6", on.link.name);
    loop {
        let actions =
            lease_loop::next(&mut client, &on.socket, &mut buf, "DHCPv6", &on.link.name).await;
        for action in actions {
            on.execute(&mut applied, action).await;
        }
    }
}

/// What the DHCPv6 client acts on: its link, socket and the names it
/// contributes to.
struct OnLink {
    handle: Handle,
    link: LinkInfo,
    socket: UdpSocket,
    /// Where requests go: all DHCP servers on the link.
    to: SocketAddrV6,
    names: SharedNames,
    names_key: String,
}

impl OnLink {
    /// Carries out one action; `applied` is the lease on the link.
    async fn execute(&self, applied: &mut Option<Lease>, action: Action) {
        let Self {
            handle,
            link,
            socket,
            to,
            names,
            names_key,
        } = self;
        let to = *to;
        match action {
            Action::Send { kind, bytes } => {
                tracing::debug!("{}: sending DHCPv6 {kind:?}", link.name);
                // Before the link-local address passes DAD the kernel
                // has no source to send from: retransmission retries.
                if let Err(e) = socket.send_to(&bytes, to).await {
                    tracing::debug!("{}: sending DHCPv6 {kind:?}: {e}", link.name);
                }
            }
            Action::Configure(lease) => {
                if let Some(old) = applied.take().filter(|o| o.address != lease.address) {
                    remove(handle, link, &old).await;
                }
                match add(handle, link, &lease).await {
                    Ok(()) => tracing::info!(
                        "{}: {}/128 via dhcp6, valid {} s{}",
                        link.name,
                        lease.address,
                        lease.valid.as_secs(),
                        dns_summary(&lease)
                    ),
                    Err(e) => tracing::error!(
                        "{}: adding {}/128: {}",
                        link.name,
                        lease.address,
                        crate::error_chain(&e)
                    ),
                }
                names.set_lease(
                    names_key,
                    Some(Contribution {
                        hostname: None,
                        nameservers: lease.dns.iter().copied().map(IpAddr::V6).collect(),
                        search: lease.search.clone(),
                    }),
                );
                *applied = Some(lease);
            }
            Action::Deconfigure(lease) => {
                tracing::warn!(
                    "{}: lost DHCPv6 lease on {}, removing it",
                    link.name,
                    lease.address
                );
                remove(handle, link, &lease).await;
                names.set_lease(names_key, None);
                *applied = None;
            }
        }
    }
}

fn dns_summary(lease: &Lease) -> String {
    if lease.dns.is_empty() {
        return String::new();
    }
    let dns: Vec<String> = lease.dns.iter().map(ToString::to_string).collect();
    format!(", dns {}", dns.join(" "))
}

async fn add(handle: &Handle, link: &LinkInfo, lease: &Lease) -> Result<(), rtnetlink::Error> {
    let secs = |d: std::time::Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX - 1);
    crate::ipv4_setup::add_address(
        handle,
        link.index,
        IpAddr::V6(lease.address),
        128,
        Some((secs(lease.preferred), secs(lease.valid))),
    )
    .await
}

async fn remove(handle: &Handle, link: &LinkInfo, lease: &Lease) {
    let msg = rtnetlink::AddressMessageBuilder::<Ipv6Addr>::new()
        .index(link.index)
        .address(lease.address, 128)
        .build();
    if let Err(e) = handle.address().del(msg).execute().await {
        // The kernel may have expired it already.
        tracing::debug!("{}: removing {}: {e}", link.name, lease.address);
    }
}
