//! The mesh's UDP socket: one, dual-stack, on every address.

use std::net::Ipv6Addr;
use std::os::fd::AsRawFd;

use tokio::net::UdpSocket;

/// Socket buffers: a burst of a TCP window's worth of datagrams must wait
/// in the kernel while the device loop decrypts, not be dropped. The
/// default (~200 KiB) dropped about one datagram in ten in the mesh bench
/// (docs/mesh-datapath.md), and TCP then backed off.
const BUFFER: libc::c_int = 4 << 20;

/// Binds `[::]:port` (IPv4 peers arrive as `::ffff:a.b.c.d`), with
/// [`BUFFER`]-sized buffers, and lets the kernel fragment what it sends.
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
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        // The FORCE options pass the sysctl cap and need CAP_NET_ADMIN,
        // which networkd has; elsewhere the capped size will do.
        if set_int(&socket, libc::SOL_SOCKET, force, BUFFER).is_err() {
            set_int(&socket, libc::SOL_SOCKET, plain, BUFFER)?;
        }
    }
    Ok(socket)
}

// Neither nix nor socket2 offers the MTU discovery options; one
// function for all of them.
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
