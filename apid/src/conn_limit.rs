//! Caps on apid's connections: so many in all, so many per client address.
//! A slot is taken at accept, before the TLS handshake (a client that
//! connects and says nothing holds one until the handshake deadline), and
//! given back when tonic drops the connection. Over a cap the connection is
//! closed at once; one client address cannot take the slots of others.
//!
//! A connection also has to keep talking: after the TLS handshake its
//! first bytes (the HTTP/2 preface) are due within [`FIRST_BYTES`], which
//! hyper does not bound, and then something at least every [`IDLE`]. A
//! live client always has: apid pings every 30 s, idle or not, and the
//! client's answer is a read.

use std::collections::HashMap;
use std::future::Future as _;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::Connected;

/// Connections at most, handshakes included. Well under the descriptor
/// limit apid raises itself to ([`crate::raise_fd_limit`]).
pub const MAX_CONNECTIONS: usize = 512;
/// Connections at most from one address.
pub const MAX_PER_ADDRESS: usize = 64;
/// After the handshake, until the client's first bytes.
pub const FIRST_BYTES: Duration = Duration::from_secs(10);
/// Between two reads: three of apid's keepalive pings unanswered.
pub const IDLE: Duration = Duration::from_secs(90);

#[derive(Default)]
struct Counts {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// The slots, shared by the accept loop and every connection's [`Slot`].
#[derive(Clone, Default)]
pub struct Limits {
    counts: Arc<Mutex<Counts>>,
}

/// Why a connection was refused a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Total,
    Address,
}

impl Limits {
    /// A slot for a connection from `ip`, or which cap it hit.
    pub fn take(&self, ip: IpAddr) -> Result<Slot, Full> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.total >= MAX_CONNECTIONS {
            return Err(Full::Total);
        }
        let mine = counts.per_address.entry(ip).or_default();
        if *mine >= MAX_PER_ADDRESS {
            return Err(Full::Address);
        }
        *mine += 1;
        counts.total += 1;
        Ok(Slot {
            limits: self.clone(),
            ip,
        })
    }
}

/// One connection's slot, given back on drop.
pub struct Slot {
    limits: Limits,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.limits.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_address.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_address.remove(&self.ip);
            }
        }
    }
}

/// A connection holding its slot: the stream tonic serves, ended with
/// `TimedOut` when the client stops talking.
pub struct Held<S> {
    inner: S,
    _slot: Slot,
    /// When the next read is due.
    deadline: Pin<Box<Sleep>>,
}

impl<S> Held<S> {
    pub fn new(inner: S, slot: Slot) -> Self {
        Self {
            inner,
            _slot: slot,
            deadline: Box::pin(tokio::time::sleep(FIRST_BYTES)),
        }
    }
}

impl<S: Connected> Connected for Held<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Held<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                self.deadline.as_mut().reset(Instant::now() + IDLE);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent nothing in time",
                ))),
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Held<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_address_and_given_back() {
        let limits = Limits::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let held: Vec<Slot> = (0..MAX_PER_ADDRESS)
            .map(|_| limits.take(a).unwrap())
            .collect();
        assert_eq!(limits.take(a).err(), Some(Full::Address));
        // Another address is not held back by the first one's.
        let other = limits.take(b).unwrap();
        drop(held);
        drop(other);
        assert!(limits.take(a).is_ok());
        assert!(limits.counts.lock().unwrap().per_address.len() <= 1);
    }

    #[test]
    fn the_total_is_capped() {
        let limits = Limits::default();
        let mut held = Vec::new();
        for i in 0..MAX_CONNECTIONS {
            let ip = IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]);
            held.push(limits.take(ip).unwrap());
        }
        assert_eq!(
            limits.take("10.9.9.9".parse().unwrap()).err(),
            Some(Full::Total)
        );
        held.pop();
        assert!(limits.take("10.9.9.9".parse().unwrap()).is_ok());
    }
}
