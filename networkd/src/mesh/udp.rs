//! The mesh's UDP socket: one, dual-stack, on every address.

use std::net::Ipv6Addr;
use std::os::fd::AsRawFd;

use tokio::net::UdpSocket;

/// Binds `[::]:port` (IPv4 peers arrive as `::ffff:a.b.c.d`) and lets the
/// kernel fragment what it sends.
///
/// Why fragments: the mesh MTU (underlay − 80) fits a WireGuard datagram
/// over IPv6, but a relayed one carries a 36-byte frame header more
/// ([`super::wire`]); with the default path-MTU discovery the kernel would
/// refuse such a datagram (EMSGSIZE) instead of sending it in two pieces.
/// WireGuard in the kernel does not set DF either.
pub async fn bind(port: u16) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, port)).await?;
    set_int(
        &socket,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_DONT,
    )?;
    set_int(
        &socket,
        libc::IPPROTO_IPV6,
        libc::IPV6_MTU_DISCOVER,
        libc::IPV6_PMTUDISC_DONT,
    )?;
    Ok(socket)
}

// Neither nix nor socket2 offers these two options.
fn set_int(
    socket: &UdpSocket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: a valid socket descriptor, and a pointer to a c_int with its
    // size, as setsockopt(2) expects for these options.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
