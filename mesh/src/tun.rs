//! A TUN device: IP packets without a link layer (`IFF_TUN|IFF_NO_PI`),
//! read and written by the [`device`](super::device) loop.
//!
//! Every packet read or written starts with a virtio-net header
//! (`IFF_VNET_HDR`), and TSO is on (`TUNSETOFFLOAD`): the kernel passes
//! TCP segments of up to 64 KiB, which [`super::offload`] cuts and joins.
//!
//! Written here rather than taken from a crate: what we need is one
//! `open` and one `ioctl(TUNSETIFF)`, and `tun-rs` (the maintained choice)
//! brings address management of its own (`netconfig-rs`, `getifaddrs`)
//! beside the rtnetlink stack networkd already has, plus code for five
//! other platforms. Addresses and MTU stay with rtnetlink ([`super::link`]).

use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

#[derive(Debug, thiserror::Error)]
pub enum TunError {
    #[error("interface name {0:?} is empty or longer than 15 bytes")]
    Name(String),
    #[error("opening /dev/net/tun")]
    Open(#[source] io::Error),
    #[error("creating TUN device {name} (TUNSETIFF)")]
    SetIff {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("turning on TSO for TUN device {name} (TUNSETOFFLOAD)")]
    SetOffload {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("registering TUN device {name} with the runtime")]
    Register {
        name: String,
        #[source]
        source: io::Error,
    },
}

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags (the
/// rest of the kernel's union is padding here).
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// An open TUN device, non-blocking, on the tokio reactor. The interface
/// goes away when this is dropped.
#[derive(Debug)]
pub struct Tun {
    fd: AsyncFd<OwnedFd>,
    name: String,
}

impl Tun {
    /// Creates (or attaches to) TUN interface `name` in the calling
    /// thread's network namespace. Needs a tokio runtime.
    pub fn open(name: &str) -> Result<Tun, TunError> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(TunError::Name(name.to_owned()));
        }
        // SAFETY: a NUL-terminated path; the returned fd is checked.
        let raw = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(TunError::Open(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut req = IfReqFlags {
            name: [0; libc::IFNAMSIZ],
            flags: (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes an ifreq-sized struct we own.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
            return Err(TunError::SetIff {
                name: name.to_owned(),
                source: io::Error::last_os_error(),
            });
        }
        // Checksums and TCP segmentation for IPv4 and IPv6 (every kernel
        // since 2.6.27 has them for TUN).
        let offloads = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
        // SAFETY: TUNSETOFFLOAD takes its flags by value.
        if unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(offloads),
            )
        } < 0
        {
            return Err(TunError::SetOffload {
                name: name.to_owned(),
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: an OwnedFd always returns the fd it owns, which stays
        // open until the AsyncFd (its owner from here on) is dropped.
        let fd =
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE) }
                .map_err(|e| TunError::Register {
                    name: name.to_owned(),
                    source: e.into(),
                })?;
        Ok(Tun {
            fd,
            name: name.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next packet from the kernel, after its virtio-net header
    /// ([`super::offload::VnetHdr`]). Cancel-safe.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| nix::unistd::read(fd, buf).map_err(io::Error::from)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Hands one packet to the kernel, after its virtio-net header.
    pub async fn send(&self, packet: &[u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| nix::unistd::write(fd, packet).map_err(io::Error::from)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}
