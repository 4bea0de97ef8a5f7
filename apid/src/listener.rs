//! TLS accept loop feeding tonic. Each handshake runs in its own task with a
//! deadline, so a client that connects and says nothing cannot hold up
//! others, and refused clients are logged with their address. Each new
//! connection uses the TLS configuration current at its accept: when the
//! node leaves maintenance mode, the next handshake already requires a
//! client certificate. Every connection holds a slot of [`conn_limit`]
//! from accept to close.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use slate_common::ratelimit::LogLimiter;

use crate::conn_limit::{self, Full, Held, Limits};

use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for tonic; accepting pauses when full.
const BACKLOG: usize = 64;
/// One line per source address per this about refused handshakes: a
/// scanner or a misconfigured client must not fill the console.
const REFUSED_LOG_EVERY: Duration = Duration::from_secs(10);

/// Logs a failed handshake from `peer`, at most once per
/// [`REFUSED_LOG_EVERY`] per address, with the count held back.
fn log_refused(limiter: &Mutex<LogLimiter<IpAddr>>, peer: std::net::SocketAddr, why: &str) {
    let allowed = match limiter.lock() {
        Ok(mut limiter) => limiter.allow(&peer.ip(), Instant::now()),
        // A panic while logging poisoned it: log rather than go quiet.
        Err(_) => Some(0),
    };
    match allowed {
        Some(0) => tracing::info!("TLS client {peer}: {why}"),
        Some(held) => {
            tracing::info!("TLS client {peer}: {why} ({held} more from its address held back)")
        }
        None => {}
    }
}

pub fn tls_incoming(
    listener: TcpListener,
    config: tokio::sync::watch::Receiver<Arc<ServerConfig>>,
) -> ReceiverStream<Result<Held<TlsStream<TcpStream>>, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(BACKLOG);
    let limiter = Arc::new(Mutex::new(LogLimiter::new(REFUSED_LOG_EVERY)));
    let limits = Limits::default();
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let slot = match limits.take(peer.ip()) {
                Ok(slot) => slot,
                Err(full) => {
                    let why = match full {
                        Full::Total => format!(
                            "closed: {} connections are open",
                            conn_limit::MAX_CONNECTIONS
                        ),
                        Full::Address => format!(
                            "closed: its address has {} connections open",
                            conn_limit::MAX_PER_ADDRESS
                        ),
                    };
                    log_refused(&limiter, peer, &why);
                    continue; // dropping tcp closes it
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(Arc::clone(&config.borrow()));
            let tx = tx.clone();
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(Held::new(tls, slot))).await;
                    }
                    Ok(Err(e)) => log_refused(&limiter, peer, &format!("refused: {e}")),
                    Err(_) => log_refused(&limiter, peer, "timed out in the handshake"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
