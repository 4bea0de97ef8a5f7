//! Health probes: one task per endpoint, every probe interval.
//!
//! A probe sends `GET /readyz` over TLS on a connection it keeps open, so a
//! probe of a healthy endpoint costs one small request, not a TCP and TLS
//! handshake (an API server probed by every node twice a second would feel
//! the handshakes). When that connection fails, the same probe connects
//! afresh: the TCP connect alone decides between `down` and `up`, the TLS
//! handshake and the status between `up`, `ready` and `notready` (see
//! [`Health`] for the rule).
//!
//! The probe accepts any server certificate: it measures whether and how
//! fast the endpoint answers, it never sends a credential, and what it
//! learns cannot reach a client. The client (kubelet) does the real
//! verification end to end through the balancer. Verifying here would need
//! the cluster CA in networkd and a name that matches each node's serving
//! certificate, which a discovered endpoint (an address) may not have.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::endpoints::{Health, Target};
use super::{Settings, Shared};

/// The most of a `/readyz` body read (its verbose form is a few KiB).
const MAX_BODY: usize = 64 * 1024;

/// What one probe found.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub health: Health,
    pub address: Option<SocketAddr>,
    pub latency: Option<Duration>,
    pub error: Option<String>,
}

/// A kept-alive HTTP/1.1 connection to one endpoint.
struct Session {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
}

/// Probes `target` until aborted (when no source names it any more).
pub(crate) async fn run(shared: Arc<Shared>, target: Target) {
    let mut session = None;
    let mut tick = tokio::time::interval(shared.settings.probe_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let verdict = probe(&shared.settings, &shared.tls, &target, &mut session).await;
        shared.probed(&target, verdict);
    }
}

async fn probe(
    settings: &Settings,
    tls: &Arc<rustls::ClientConfig>,
    target: &Target,
    session: &mut Option<Session>,
) -> Verdict {
    let wait = settings.probe_timeout;
    if let Some(s) = session.as_mut() {
        if let Ok(Ok((status, latency))) = timeout(wait, readyz(s, target)).await {
            return verdict(status, latency, s.addr);
        }
        // Closed by the server (idle timeout, restart) or wedged: a fresh
        // connection decides.
        *session = None;
    }
    let (tcp, addr, connect_time) = match connect(target, None, wait).await {
        Ok(c) => c,
        Err(error) => {
            return Verdict {
                health: Health::Down,
                address: None,
                latency: None,
                error: Some(error),
            };
        }
    };
    let up = |why: String| Verdict {
        health: Health::Up,
        address: Some(addr),
        latency: Some(connect_time),
        error: Some(why),
    };
    let mut s = match timeout(wait, handshake(tls, target, tcp, addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return up(e),
        Err(_) => return up(format!("no TLS handshake within {wait:?}")),
    };
    match timeout(wait, readyz(&mut s, target)).await {
        Ok(Ok((status, latency))) => {
            *session = Some(s);
            verdict(status, latency, addr)
        }
        Ok(Err(e)) => up(format!("GET /readyz: {e}")),
        Err(_) => up(format!("no /readyz answer within {wait:?}")),
    }
}

/// 200 is ready; 401/403 is an API server that answers but keeps
/// `/readyz` from anonymous callers (no verdict: up); anything else is the
/// API server saying it is not ready (500 while etcd is away).
fn verdict(status: http::StatusCode, latency: Duration, addr: SocketAddr) -> Verdict {
    let (health, error) = match status.as_u16() {
        200 => (Health::Ready, None),
        401 | 403 => (Health::Up, Some(format!("/readyz: {status}"))),
        _ => (Health::NotReady, Some(format!("/readyz: {status}"))),
    };
    Verdict {
        health,
        address: Some(addr),
        latency: Some(latency),
        error,
    }
}

/// Connects to `target`: `hint` first (the address that worked last),
/// then every address the name resolves to. Returns the stream, the
/// address and how long the successful connect took.
pub(crate) async fn connect(
    target: &Target,
    hint: Option<SocketAddr>,
    wait: Duration,
) -> Result<(TcpStream, SocketAddr, Duration), String> {
    let first = hint.or_else(|| target.ip().map(|ip| SocketAddr::new(ip, target.port)));
    let mut last_error = None;
    if let Some(addr) = first {
        match connect_one(addr, wait).await {
            Ok((s, took)) => return Ok((s, addr, took)),
            Err(e) if target.ip().is_some() => return Err(e),
            Err(e) => last_error = Some(e),
        }
    }
    let resolved = timeout(
        wait,
        tokio::net::lookup_host((target.host.as_str(), target.port)),
    )
    .await;
    let addrs: Vec<SocketAddr> = match resolved {
        Ok(Ok(addrs)) => addrs.filter(|a| Some(*a) != first).collect(),
        Ok(Err(e)) => return Err(format!("resolving {}: {e}", target.host)),
        Err(_) => {
            return Err(format!(
                "resolving {}: no answer within {wait:?}",
                target.host
            ));
        }
    };
    for addr in addrs {
        match connect_one(addr, wait).await {
            Ok((s, took)) => return Ok((s, addr, took)),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| format!("{} resolves to no address", target.host)))
}

async fn connect_one(addr: SocketAddr, wait: Duration) -> Result<(TcpStream, Duration), String> {
    let start = Instant::now();
    match timeout(wait, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            // Small requests both ways: no Nagle delay.
            let _ = s.set_nodelay(true);
            Ok((s, start.elapsed()))
        }
        Ok(Err(e)) => Err(format!("connecting to {addr}: {e}")),
        Err(_) => Err(format!("connecting to {addr}: no answer within {wait:?}")),
    }
}

async fn handshake(
    tls: &Arc<rustls::ClientConfig>,
    target: &Target,
    tcp: TcpStream,
    addr: SocketAddr,
) -> Result<Session, String> {
    let name = rustls::pki_types::ServerName::try_from(target.host.clone())
        .map_err(|e| format!("server name {}: {e}", target.host))?;
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("no TLS: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    // Ends when the session (its sender) is dropped or the peer closes.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Session { sender, addr })
}

/// One `GET /readyz`: its status and round trip (to the end of the body).
async fn readyz(s: &mut Session, target: &Target) -> Result<(http::StatusCode, Duration), String> {
    s.sender.ready().await.map_err(|e| e.to_string())?;
    let request = http::Request::get("/readyz")
        .header(http::header::HOST, target.to_string())
        .header(http::header::USER_AGENT, "slate-networkd-balancer")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    let response = s
        .sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    // Read to the end so the connection can carry the next probe.
    Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((status, start.elapsed()))
}
