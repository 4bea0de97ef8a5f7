//! The mesh's UDP socket: one, dual-stack, on every address.

use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, sendmsg,
};
use tokio::io::Interest;
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

/// Asks the kernel to hand over runs of same-sized datagrams from one
/// sender as one buffer (UDP GRO, Linux 5.0): one receive call per run
/// instead of per datagram. False where the kernel lacks it; the socket
/// then works as before.
pub fn enable_gro(socket: &UdpSocket) -> bool {
    set_int(socket, libc::SOL_UDP, libc::UDP_GRO, 1).is_ok()
}

/// One receive: the bytes, the sender, and the size of each datagram in
/// them (all the same but the last, which may be shorter) when the kernel
/// joined several ([`enable_gro`]); None for a single datagram.
pub async fn recv_batch(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr, Option<usize>)> {
    loop {
        socket.readable().await?;
        match socket.try_io(Interest::READABLE, || recv_gro(socket.as_raw_fd(), buf)) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            result => return result,
        }
    }
}

fn recv_gro(fd: RawFd, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr, Option<usize>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!(i32);
    let msg = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut space), MsgFlags::empty())?;
    let mut segment = None;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::UdpGroSegments(size) = cmsg {
            segment = usize::try_from(size).ok().filter(|s| *s > 0);
        }
    }
    let from = msg
        .address
        .as_ref()
        .and_then(|a| {
            a.as_sockaddr_in6()
                .map(|v6| SocketAddr::V6(std::net::SocketAddrV6::from(*v6)))
                .or_else(|| {
                    a.as_sockaddr_in()
                        .map(|v4| SocketAddr::V4(std::net::SocketAddrV4::from(*v4)))
                })
        })
        .ok_or_else(|| std::io::Error::other("a datagram without a sender address"))?;
    Ok((msg.bytes, from, segment))
}

/// Sends `data`, datagrams of `segment` bytes back to back (the last may
/// be shorter), to `to` in one call (UDP GSO, Linux 4.18) when there are
/// several. Where the kernel or the outgoing device cannot, the caller
/// gets the error and sends them one by one.
pub async fn send_batch(
    socket: &UdpSocket,
    data: &[u8],
    segment: usize,
    to: SocketAddr,
) -> std::io::Result<()> {
    if data.len() <= segment {
        socket.send_to(data, to).await?;
        return Ok(());
    }
    let size = u16::try_from(segment).map_err(std::io::Error::other)?;
    let to = SockaddrStorage::from(to);
    loop {
        socket.writable().await?;
        let sent = socket.try_io(Interest::WRITABLE, || {
            let cmsg = [ControlMessage::UdpGsoSegments(&size)];
            sendmsg(
                socket.as_raw_fd(),
                &[IoSlice::new(data)],
                &cmsg,
                MsgFlags::empty(),
                Some(&to),
            )
            .map_err(std::io::Error::from)
        });
        match sent {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            result => return result.map(drop),
        }
    }
}
