//! The client's UDP socket: 0.0.0.0:68 bound to one link.
//!
//! A plain UDP socket (no packet socket) is enough because we set the
//! BROADCAST flag, so servers broadcast their replies until we have an
//! address, and the kernel sends limited broadcast out of the bound device
//! with source 0.0.0.0 before we have one.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::net::UdpSocket;

pub const CLIENT_PORT: u16 = 68;
pub const SERVER_PORT: u16 = 67;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("{ifname}: {step} on the DHCP socket")]
    Setup {
        ifname: String,
        step: &'static str,
        #[source]
        source: io::Error,
    },
}

pub struct DhcpSocket {
    socket: UdpSocket,
}

impl DhcpSocket {
    /// Binds 0.0.0.0:68 on `ifname`. SO_BINDTODEVICE keeps replies for other
    /// links away from this client (one client per link, later); SO_REUSEADDR
    /// lets a restarted networkd bind while the old socket lingers.
    pub fn bind(ifname: &str) -> Result<DhcpSocket, SocketError> {
        let err = |step: &'static str| {
            let ifname = ifname.to_owned();
            move |source| SocketError::Setup {
                ifname,
                step,
                source,
            }
        };
        let socket =
            Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(err("creating"))?;
        socket
            .set_reuse_address(true)
            .map_err(err("setting SO_REUSEADDR"))?;
        socket
            .set_broadcast(true)
            .map_err(err("setting SO_BROADCAST"))?;
        socket
            .bind_device(Some(ifname.as_bytes()))
            .map_err(err("setting SO_BINDTODEVICE"))?;
        socket
            .bind(&SockAddr::from(SocketAddrV4::new(
                Ipv4Addr::UNSPECIFIED,
                CLIENT_PORT,
            )))
            .map_err(err("binding port 68"))?;
        socket
            .set_nonblocking(true)
            .map_err(err("setting O_NONBLOCK"))?;
        let socket = UdpSocket::from_std(socket.into()).map_err(err("registering with tokio"))?;
        Ok(DhcpSocket { socket })
    }

    pub async fn send(&self, to: Ipv4Addr, bytes: &[u8]) -> io::Result<()> {
        self.socket
            .send_to(bytes, SocketAddrV4::new(to, SERVER_PORT))
            .await
            .map(|_| ())
    }

    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.socket.recv_from(buf).await.map(|(n, _)| n)
    }
}

impl crate::lease_loop::Receive for DhcpSocket {
    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        DhcpSocket::recv(self, buf).await
    }
}
