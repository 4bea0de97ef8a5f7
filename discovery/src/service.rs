//! The discovery service: an HTTP/1.1 server keeping sealed affiliate
//! records as opaque blobs, per cluster, for a TTL.
//!
//! ```text
//! PUT    /v1/clusters/{cluster_key}/affiliates/{affiliate_id}   body: sealed record → 204
//!        optional header `slate-ttl: SECONDS` (at most the service's TTL)
//! DELETE /v1/clusters/{cluster_key}/affiliates/{affiliate_id}   → 204
//! GET    /v1/clusters/{cluster_key}/affiliates                  → 200, a bundle (crate::bundle)
//! GET    /healthz                                               → 200
//! ```
//! It holds no key: the cluster key and affiliate ids are opaque names
//! derived by the nodes, and the blobs are sealed. Everything is bounded
//! (body size, affiliates per cluster, clusters, connections, time per
//! request), bad input gets a 4xx, and is logged at most once per source
//! per minute.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::bundle::{self, MAX_BUNDLE_RECORDS};
use crate::proof::ProofError;
use crate::record::{ClusterKeys, MAX_SEALED};
use slate_common::ratelimit::{LogLimiter, held_back};

/// Header with which a node asks for a shorter TTL than the service's.
pub const TTL_HEADER: &str = "slate-ttl";
/// Longest cluster key or affiliate id.
pub const MAX_NAME: usize = 64;

#[derive(Debug, Clone)]
pub struct Limits {
    /// How long a record is kept after its last PUT.
    pub ttl: Duration,
    pub max_affiliates: usize,
    pub max_clusters: usize,
    /// Most bytes of records held in all.
    pub max_bytes: usize,
    pub max_connections: usize,
    /// Time to send a request's head and then its body.
    pub request_timeout: Duration,
    /// Longest a connection may stay open, however busy.
    pub connection_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(300),
            max_affiliates: MAX_BUNDLE_RECORDS,
            max_clusters: 4096,
            max_bytes: 256 << 20,
            max_connections: 512,
            request_timeout: Duration::from_secs(10),
            connection_timeout: Duration::from_secs(60),
        }
    }
}

/// Where the service reads the time; tests pass one they can move.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("the cluster has the most affiliates the service keeps ({0})")]
    TooManyAffiliates(usize),
    #[error("the service keeps the most clusters it can ({0})")]
    TooManyClusters(usize),
    #[error("the service holds the most bytes it may ({0})")]
    Full(usize),
}

/// The blobs, in memory: a restart loses them, and nodes publish again
/// within a TTL.
#[derive(Debug)]
pub struct Store {
    clusters: HashMap<String, HashMap<String, Blob>>,
    max_affiliates: usize,
    max_clusters: usize,
    /// Clusters × affiliates × 4 KiB can be far more than a small server
    /// has; this caps the blobs' total size.
    max_bytes: usize,
    bytes: usize,
}

#[derive(Debug)]
struct Blob {
    data: Bytes,
    expires: Instant,
}

impl Store {
    pub fn new(max_affiliates: usize, max_clusters: usize, max_bytes: usize) -> Self {
        Self {
            clusters: HashMap::new(),
            max_affiliates,
            max_clusters,
            max_bytes,
            bytes: 0,
        }
    }

    /// Keeps `data` as `affiliate` of `cluster` until `now + ttl`.
    pub fn put(
        &mut self,
        cluster: &str,
        affiliate: &str,
        data: Bytes,
        ttl: Duration,
        now: Instant,
    ) -> Result<(), StoreError> {
        let known = self.clusters.get(cluster);
        let old = known
            .and_then(|a| a.get(affiliate))
            .map_or(0, |b| b.data.len());
        let new_cluster = known.is_none() && self.clusters.len() >= self.max_clusters;
        let new_affiliate =
            known.is_some_and(|a| !a.contains_key(affiliate) && a.len() >= self.max_affiliates);
        let too_big = self.bytes - old + data.len() > self.max_bytes;
        if new_cluster || new_affiliate || too_big {
            self.sweep(now);
            if !self.clusters.contains_key(cluster) && self.clusters.len() >= self.max_clusters {
                return Err(StoreError::TooManyClusters(self.max_clusters));
            }
            if self
                .clusters
                .get(cluster)
                .is_some_and(|a| !a.contains_key(affiliate) && a.len() >= self.max_affiliates)
            {
                return Err(StoreError::TooManyAffiliates(self.max_affiliates));
            }
            let old = self
                .clusters
                .get(cluster)
                .and_then(|a| a.get(affiliate))
                .map_or(0, |b| b.data.len());
            if self.bytes - old + data.len() > self.max_bytes {
                return Err(StoreError::Full(self.max_bytes));
            }
        }
        let expires = now + ttl;
        self.bytes += data.len();
        let affiliates = self.clusters.entry(cluster.to_owned()).or_default();
        if let Some(old) = affiliates.insert(affiliate.to_owned(), Blob { data, expires }) {
            self.bytes -= old.data.len();
        }
        Ok(())
    }

    /// The live blobs of `cluster`.
    pub fn list(&self, cluster: &str, now: Instant) -> Vec<Bytes> {
        self.clusters.get(cluster).map_or_else(Vec::new, |a| {
            a.values()
                .filter(|b| b.expires > now)
                .map(|b| b.data.clone())
                .collect()
        })
    }

    /// Forgets one affiliate; whether it was there.
    pub fn delete(&mut self, cluster: &str, affiliate: &str) -> bool {
        let Some(affiliates) = self.clusters.get_mut(cluster) else {
            return false;
        };
        let old = affiliates.remove(affiliate);
        if affiliates.is_empty() {
            self.clusters.remove(cluster);
        }
        if let Some(old) = &old {
            self.bytes -= old.data.len();
        }
        old.is_some()
    }

    /// Drops expired blobs and empty clusters; returns how many blobs went.
    pub fn sweep(&mut self, now: Instant) -> usize {
        let mut gone = 0;
        let mut freed = 0;
        self.clusters.retain(|_, affiliates| {
            affiliates.retain(|_, b| {
                let live = b.expires > now;
                if !live {
                    gone += 1;
                    freed += b.data.len();
                }
                live
            });
            !affiliates.is_empty()
        });
        self.bytes -= freed;
        gone
    }

    pub fn clusters(&self) -> usize {
        self.clusters.len()
    }

    /// Bytes of blobs held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The running service's state.
pub struct Service {
    limits: Limits,
    store: Mutex<Store>,
    clock: Arc<dyn Clock>,
    log: Mutex<LogLimiter<IpAddr>>,
    /// A node's copy serves its own cluster only, and takes writes with a
    /// proof of membership ([`crate::proof`]); `None` for a public service.
    members: Option<Arc<ClusterKeys>>,
}

impl Service {
    /// `limits.max_affiliates` is capped at [`MAX_BUNDLE_RECORDS`]: a list
    /// answer holds no more.
    pub fn new(mut limits: Limits, clock: Arc<dyn Clock>) -> Self {
        limits.max_affiliates = limits.max_affiliates.min(MAX_BUNDLE_RECORDS);
        Self {
            store: Mutex::new(Store::new(
                limits.max_affiliates,
                limits.max_clusters,
                limits.max_bytes,
            )),
            limits,
            clock,
            log: Mutex::new(LogLimiter::with_capacity(Duration::from_secs(60), 4096)),
            members: None,
        }
    }

    /// Serves only the cluster of `keys`, and only writes that prove
    /// membership of it: what a node's copy does.
    pub fn members_only(mut self, keys: Arc<ClusterKeys>) -> Self {
        self.members = Some(keys);
        self
    }

    /// Refuses a write by someone who cannot show they are of the cluster.
    fn admit_write(
        &self,
        method: &Method,
        path: &str,
        proof: Option<&str>,
        cluster: &str,
        body: &[u8],
    ) -> Result<(), (StatusCode, &'static str)> {
        let Some(keys) = &self.members else {
            return Ok(());
        };
        if cluster != keys.cluster_key() {
            return Err((StatusCode::FORBIDDEN, "this service serves another cluster"));
        }
        let now = crate::record::unix_ms(std::time::SystemTime::now());
        crate::proof::verify(keys, proof, method.as_str(), path, body, now).map_err(|e| match e {
            ProofError::Missing => (StatusCode::FORBIDDEN, "a write needs a proof of membership"),
            ProofError::Malformed => (StatusCode::FORBIDDEN, "a malformed proof"),
            ProofError::Stale => (StatusCode::FORBIDDEN, "a stale proof"),
            ProofError::Invalid => (StatusCode::FORBIDDEN, "a proof that does not verify"),
        })
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Logs `what` at warn level unless a line about `source` was logged
    /// within the last minute: what strangers send must not flood the log.
    fn warn(&self, source: IpAddr, what: std::fmt::Arguments<'_>) {
        let allowed =
            (self.log.lock().unwrap_or_else(|e| e.into_inner())).allow(&source, Instant::now());
        if let Some(n) = allowed {
            tracing::warn!("{source}: {what}{}", held_back(n));
        }
    }

    /// Sweeps expired blobs now.
    pub fn sweep(&self) -> usize {
        let now = self.clock.now();
        self.store().sweep(now)
    }
}

/// Serves `listener` until the task is dropped, sweeping expired records
/// every quarter TTL.
pub async fn run(listener: TcpListener, service: Arc<Service>) {
    let connections = Arc::new(tokio::sync::Semaphore::new(service.limits.max_connections));
    let mut sweep = tokio::time::interval((service.limits.ttl / 4).max(Duration::from_secs(1)));
    loop {
        let (stream, peer) = tokio::select! {
            _ = sweep.tick() => {
                let gone = service.sweep();
                if gone > 0 {
                    tracing::debug!("{gone} records expired");
                }
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            service.warn(
                peer.ip(),
                format_args!("connection refused: too many connections"),
            );
            continue;
        };
        let service = service.clone();
        tokio::spawn(async move {
            let limits = service.limits.clone();
            let svc = service.clone();
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.request_timeout)
                .max_buf_size(16 * 1024)
                .serve_connection(
                    TokioIo::new(stream),
                    hyper::service::service_fn(move |req| handle(svc.clone(), peer, req)),
                );
            match tokio::time::timeout(limits.connection_timeout, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => service.warn(peer.ip(), format_args!("HTTP: {e}")),
                Err(_) => tracing::debug!("{peer}: connection open too long, closed"),
            }
            drop(permit);
        });
    }
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

/// A request's route, or the 4xx it gets.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Health,
    List {
        cluster: &'a str,
    },
    Affiliate {
        cluster: &'a str,
        affiliate: &'a str,
    },
}

fn valid_name(s: &str) -> bool {
    (1..=MAX_NAME).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn route(path: &str) -> Result<Route<'_>, (StatusCode, &'static str)> {
    let parts: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let (cluster, route) = match parts.as_slice() {
        ["healthz"] => return Ok(Route::Health),
        ["v1", "clusters", cluster, "affiliates"] => (*cluster, Route::List { cluster }),
        ["v1", "clusters", cluster, "affiliates", affiliate] => {
            if !valid_name(affiliate) {
                return Err((StatusCode::BAD_REQUEST, "bad affiliate id"));
            }
            (*cluster, Route::Affiliate { cluster, affiliate })
        }
        _ => return Err((StatusCode::NOT_FOUND, "no such path")),
    };
    if !valid_name(cluster) {
        return Err((StatusCode::BAD_REQUEST, "bad cluster key"));
    }
    Ok(route)
}

async fn handle(
    service: Arc<Service>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Reply, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = match dispatch(&service, req).await {
        Ok(r) => r,
        Err((status, why)) => {
            service.warn(
                peer.ip(),
                format_args!("{method} {path:.80}: {status}: {why}"),
            );
            reply(status, why)
        }
    };
    Ok(response)
}

async fn dispatch(
    service: &Service,
    req: Request<Incoming>,
) -> Result<Reply, (StatusCode, &'static str)> {
    let path = req.uri().path().to_owned();
    match (req.method().clone(), route(&path)?) {
        (Method::GET, Route::Health) => Ok(reply(StatusCode::OK, "ok\n")),
        (Method::GET, Route::List { cluster }) => {
            let now = service.clock.now();
            let blobs = service.store().list(cluster, now);
            let body = bundle::encode(blobs.iter().map(|b| b.as_ref()));
            let mut r = reply(StatusCode::OK, body);
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/octet-stream"),
            );
            Ok(r)
        }
        (Method::PUT, Route::Affiliate { cluster, affiliate }) => {
            let ttl = ttl(&req, service.limits.ttl)?;
            let proof = proof_of(&req);
            let body = read_body(req, service.limits.request_timeout).await?;
            service.admit_write(&Method::PUT, &path, proof.as_deref(), cluster, &body)?;
            let now = service.clock.now();
            service
                .store()
                .put(cluster, affiliate, body, ttl, now)
                .map_err(|e| match e {
                    StoreError::TooManyAffiliates(_) => (
                        StatusCode::TOO_MANY_REQUESTS,
                        "too many affiliates in the cluster",
                    ),
                    StoreError::TooManyClusters(_) => {
                        (StatusCode::TOO_MANY_REQUESTS, "too many clusters")
                    }
                    StoreError::Full(_) => (StatusCode::TOO_MANY_REQUESTS, "the service is full"),
                })?;
            Ok(reply(StatusCode::NO_CONTENT, Bytes::new()))
        }
        (Method::DELETE, Route::Affiliate { cluster, affiliate }) => {
            let proof = proof_of(&req);
            service.admit_write(&Method::DELETE, &path, proof.as_deref(), cluster, &[])?;
            service.store().delete(cluster, affiliate);
            Ok(reply(StatusCode::NO_CONTENT, Bytes::new()))
        }
        _ => Err((StatusCode::METHOD_NOT_ALLOWED, "method not allowed")),
    }
}

fn proof_of(req: &Request<Incoming>) -> Option<String> {
    let value = req.headers().get(crate::proof::PROOF_HEADER)?;
    value.to_str().ok().map(str::to_owned)
}

/// The TTL a PUT asks for: the service's, or shorter.
fn ttl(req: &Request<Incoming>, max: Duration) -> Result<Duration, (StatusCode, &'static str)> {
    let Some(value) = req.headers().get(TTL_HEADER) else {
        return Ok(max);
    };
    let secs: u64 = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|s| *s > 0)
        .ok_or((StatusCode::BAD_REQUEST, "bad slate-ttl header"))?;
    Ok(Duration::from_secs(secs).min(max))
}

async fn read_body(
    req: Request<Incoming>,
    timeout: Duration,
) -> Result<Bytes, (StatusCode, &'static str)> {
    const TOO_LARGE: (StatusCode, &str) = (StatusCode::PAYLOAD_TOO_LARGE, "body too large");
    let announced = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_SEALED as u64) {
        return Err(TOO_LARGE);
    }
    let body = tokio::time::timeout(timeout, Limited::new(req.into_body(), MAX_SEALED).collect())
        .await
        .map_err(|_| (StatusCode::REQUEST_TIMEOUT, "body too slow"))?
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                TOO_LARGE
            } else {
                (StatusCode::BAD_REQUEST, "reading the body failed")
            }
        })?
        .to_bytes();
    if body.is_empty() {
        return Err((StatusCode::BAD_REQUEST, "empty body"));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let key = "A".repeat(43);
        let list = format!("/v1/clusters/{key}/affiliates");
        let one = format!("{list}/node_1-x");
        let table: Vec<(&str, Result<Route<'_>, StatusCode>)> = vec![
            ("/healthz", Ok(Route::Health)),
            (&list, Ok(Route::List { cluster: &key })),
            (
                &one,
                Ok(Route::Affiliate {
                    cluster: &key,
                    affiliate: "node_1-x",
                }),
            ),
            ("/", Err(StatusCode::NOT_FOUND)),
            ("/v1/clusters//affiliates", Err(StatusCode::BAD_REQUEST)),
            ("/v1/clusters/a.b/affiliates", Err(StatusCode::BAD_REQUEST)),
            ("/v1/clusters/abc/affiliates/", Err(StatusCode::BAD_REQUEST)),
            (
                "/v1/clusters/abc/affiliates/%2e%2e",
                Err(StatusCode::BAD_REQUEST),
            ),
            (
                "/v1/clusters/abc/affiliates/x/y",
                Err(StatusCode::NOT_FOUND),
            ),
        ];
        for (path, want) in table {
            assert_eq!(route(path).map_err(|e| e.0), want, "{path}");
        }
        let long = format!("/v1/clusters/{}/affiliates", "a".repeat(MAX_NAME + 1));
        assert_eq!(route(&long).map_err(|e| e.0), Err(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn the_store_expires_and_bounds() {
        let t = Instant::now();
        let ttl = Duration::from_secs(10);
        let mut s = Store::new(2, 2, 1 << 20);
        s.put("c1", "a", Bytes::from_static(b"1"), ttl, t).unwrap();
        s.put(
            "c1",
            "b",
            Bytes::from_static(b"2"),
            Duration::from_secs(5),
            t,
        )
        .unwrap();
        assert_eq!(
            s.put("c1", "c", Bytes::from_static(b"3"), ttl, t),
            Err(StoreError::TooManyAffiliates(2))
        );
        // Replacing a known affiliate is fine when full.
        s.put("c1", "a", Bytes::from_static(b"1'"), ttl, t).unwrap();
        s.put("c2", "a", Bytes::from_static(b"x"), ttl, t).unwrap();
        assert_eq!(
            s.put("c3", "a", Bytes::from_static(b"y"), ttl, t),
            Err(StoreError::TooManyClusters(2))
        );
        let mut live = s.list("c1", t);
        live.sort();
        assert_eq!(
            live,
            vec![Bytes::from_static(b"1'"), Bytes::from_static(b"2")]
        );
        assert!(s.list("nope", t).is_empty());

        // b expires at +5 s, making room for c.
        let later = t + Duration::from_secs(5);
        assert_eq!(s.list("c1", later), vec![Bytes::from_static(b"1'")]);
        s.put("c1", "c", Bytes::from_static(b"3"), ttl, later)
            .unwrap();
        // Everything put at t is gone at +10 s, and empty clusters too.
        assert_eq!(s.sweep(t + ttl), 2);
        assert_eq!(s.clusters(), 1);
        s.put("c3", "a", Bytes::from_static(b"y"), ttl, t + ttl)
            .unwrap();
        assert!(s.delete("c3", "a"));
        assert!(!s.delete("c3", "a"));
        assert_eq!(s.clusters(), 1);
        assert_eq!(s.bytes(), 1, "c1/c, one byte");
    }

    #[test]
    fn the_store_caps_its_bytes() {
        let t = Instant::now();
        let ttl = Duration::from_secs(10);
        let blob = |n| Bytes::from(vec![0u8; n]);
        let mut s = Store::new(10, 10, 100);
        s.put("c1", "a", blob(60), ttl, t).unwrap();
        assert_eq!(
            s.put("c2", "a", blob(41), ttl, t),
            Err(StoreError::Full(100))
        );
        s.put("c2", "a", blob(40), ttl, t).unwrap();
        // Replacing counts the difference.
        s.put("c1", "a", blob(50), ttl, t).unwrap();
        s.put("c1", "a", blob(60), ttl, t).unwrap();
        assert_eq!(s.bytes(), 100);
        // Expired blobs make room.
        s.put("c3", "a", blob(100), ttl, t + ttl).unwrap();
        assert_eq!((s.bytes(), s.clusters()), (100, 1));
        assert!(s.delete("c3", "a"));
        assert_eq!(s.bytes(), 0);
    }
}
