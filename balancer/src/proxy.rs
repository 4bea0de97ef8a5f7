//! The forwarding part: accept, dial with retries, splice.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::Shared;
use super::endpoints::Target;

/// After a failed accept (out of descriptors): wait before the next, or
/// the loop would spin on the same error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Dead peers of idle forwarded connections (a watch whose node vanished)
/// are found by TCP keepalive after about this long.
const KEEPALIVE: Duration = Duration::from_secs(30);

pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                shared.warn_limited("accept", || format!("accepting a connection: {e}"));
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // The cap: the connection is accepted and dropped at once (no
        // drain, unlike close_gently: under a flood the cheapest refusal),
        // so the client is not left in the backlog until it times out.
        let Ok(permit) = shared.permits.clone().try_acquire_owned() else {
            shared.lock().refused += 1;
            shared.lock().dirty = true;
            shared.warn_limited(&peer.ip().to_string(), || {
                format!(
                    "{} connections open already: closing the one from {peer}",
                    shared.settings.max_connections
                )
            });
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            serve(&shared, client, peer).await;
        });
    }
}

/// Counts a client connection while it lives, per balancer and per
/// endpoint.
struct Active<'a> {
    shared: &'a Shared,
    target: Option<Target>,
}

impl<'a> Active<'a> {
    fn new(shared: &'a Shared) -> Self {
        let mut s = shared.lock();
        s.active += 1;
        s.dirty = true;
        Active {
            shared,
            target: None,
        }
    }

    fn forwarding_to(&mut self, target: Target) {
        let mut s = self.shared.lock();
        if let Some(e) = s.endpoints.get_mut(&target) {
            e.active += 1;
            e.connections += 1;
        }
        self.target = Some(target);
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        s.active -= 1;
        s.dirty = true;
        if let Some(e) = self.target.as_ref().and_then(|t| s.endpoints.get_mut(t)) {
            e.active = e.active.saturating_sub(1);
        }
    }
}

async fn serve(shared: &Shared, mut client: TcpStream, peer: SocketAddr) {
    let mut active = Active::new(shared);
    // Nothing is read from the client before an endpoint has answered, so
    // every failed dial can be retried elsewhere unseen.
    let Some((mut upstream, target)) = dial(shared).await else {
        shared.lock().unserved += 1;
        shared.warn_limited("unserved", || {
            format!("no control-plane endpoint answered: closing the connection from {peer}")
        });
        close_gently(client).await;
        return;
    };
    active.forwarding_to(target);
    let _ = client.set_nodelay(true);
    for s in [&client, &upstream] {
        let keepalive = socket2::TcpKeepalive::new().with_time(KEEPALIVE);
        let _ = socket2::SockRef::from(s).set_tcp_keepalive(&keepalive);
    }
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!("api balancer: {peer}: {e}");
    }
}

/// The most read and thrown away, and for how long, before closing a
/// client no endpoint could take.
const DRAIN_LIMIT: usize = 64 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// Closes with a FIN, not a reset: closing a socket with unread data (the
/// client's TLS ClientHello) would reset it. So: FIN first (the client's
/// handshake ends at once and it closes too), then read and drop what
/// came until the client's FIN, within bounds.
async fn close_gently(mut client: TcpStream) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let _ = client.shutdown().await;
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut drained = 0;
        while drained < DRAIN_LIMIT {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
}

/// Connects to the first endpoint that answers, in the order the
/// endpoint set gives (preferred tier, other healthy ones, the rest),
/// within the dial budget. A failed endpoint is marked down at once.
async fn dial(shared: &Shared) -> Option<(TcpStream, Target)> {
    let order = shared.lock().endpoints.next_order();
    let deadline = Instant::now() + shared.settings.dial_budget;
    for (target, hint) in order {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let wait = left.min(shared.settings.dial_timeout);
        match super::probe::connect(&target, hint, wait).await {
            Ok((stream, _, _)) => return Some((stream, target)),
            Err(e) => shared.dial_failed(&target, e),
        }
    }
    None
}
