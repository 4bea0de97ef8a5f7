//! The loop both DHCP clients run: wait for a datagram or the state
//! machine's next deadline, feed it in, hand back what to do. DHCPv4 and
//! DHCPv6 differ in their sockets and in what a lease changes on the link,
//! not here.

use std::fmt::Display;
use std::future::Future;
use std::io;
use std::time::{Duration, Instant};

/// A DHCP client state machine: fed datagrams and timeouts, it answers
/// with actions. Plain data; I/O is the caller's.
pub trait Machine {
    type Action;
    /// Why a datagram was not for us (logged at debug, then dropped).
    type Ignored: Display;
    /// When [`Machine::on_timeout`] is due; `None` with nothing to time
    /// (an infinite lease).
    fn deadline(&self) -> Option<Instant>;
    fn on_packet(
        &mut self,
        now: Instant,
        datagram: &[u8],
    ) -> Result<Vec<Self::Action>, Self::Ignored>;
    fn on_timeout(&mut self, now: Instant) -> Vec<Self::Action>;
}

/// A socket the loop reads datagrams from.
pub trait Receive {
    fn recv(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<usize>>;
}

impl Receive for tokio::net::UdpSocket {
    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv_from(buf).await.map(|(n, _)| n)
    }
}

/// Waits until `machine` has something to do and returns it: the actions
/// of a datagram it took or of its deadline. `what` (`DHCP`, `DHCPv6`)
/// and `ifname` name the client in the logs.
pub async fn next<M: Machine>(
    machine: &mut M,
    socket: &impl Receive,
    buf: &mut [u8],
    what: &str,
    ifname: &str,
) -> Vec<M::Action> {
    loop {
        let deadline = machine.deadline();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            received = socket.recv(buf) => match received {
                Ok(n) => match machine.on_packet(Instant::now(), &buf[..n]) {
                    Ok(actions) => return actions,
                    Err(why) => tracing::debug!("{ifname}: ignoring {what} datagram: {why}"),
                },
                Err(e) => {
                    tracing::warn!("{ifname}: receiving on the {what} socket: {e}");
                    // Do not spin on a persistent error.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
            () = sleep => return machine.on_timeout(Instant::now()),
        }
    }
}
