//! How a node talks to the discovery service: publish its sealed record,
//! list the cluster's. Plain HTTP/1.1, one connection per call, every call
//! bounded in time and in the size of what it reads back.
//!
//! Limitation: `https://` endpoints are refused ([`ClientError::Https`]);
//! the records are sealed, so TLS would hide only who talks to the service
//! and protect the TTL header.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use slate_common::hostport::HostPort;

use crate::bundle::{self, BundleError, MAX_BUNDLE_BYTES};
use crate::record::ClusterKeys;
use crate::service::TTL_HEADER;

/// How long one call may take, connect to last byte.
pub const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0:?} is not an http:// URL with a host")]
    BadUrl(String),
    #[error("{0:?}: https is not supported yet")]
    Https(String),
    #[error("connecting to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP with {addr}")]
    Http {
        addr: String,
        #[source]
        source: hyper::Error,
    },
    #[error("{addr} answered {status}")]
    Status {
        addr: String,
        status: http::StatusCode,
    },
    #[error("{addr} sent more than {MAX_BUNDLE_BYTES} bytes")]
    TooLarge { addr: String },
    #[error("{addr} sent a list that does not decode")]
    Bundle {
        addr: String,
        #[source]
        source: BundleError,
    },
    #[error("{addr} did not answer within {TIMEOUT:?}")]
    Timeout { addr: String },
}

/// `{endpoint}/v1/clusters/{cluster_key}/affiliates`: where a cluster's
/// records are listed.
pub fn affiliates_url(endpoint: &str, keys: &ClusterKeys) -> String {
    format!(
        "{}/v1/clusters/{}/affiliates",
        endpoint.trim_end_matches('/'),
        keys.cluster_key()
    )
}

/// `…/affiliates/{affiliate_id}`: where node `node_id` publishes.
pub fn affiliate_url(endpoint: &str, keys: &ClusterKeys, node_id: &str) -> String {
    format!(
        "{}/{}",
        affiliates_url(endpoint, keys),
        keys.affiliate_id(node_id)
    )
}

/// Puts `sealed` at `url` (see [`affiliate_url`]) for `ttl` (the service
/// may keep it for less), with the proof of membership a node's copy of
/// the service asks for ([`crate::proof`]).
pub async fn publish(
    url: &str,
    keys: &ClusterKeys,
    sealed: &[u8],
    ttl: Duration,
) -> Result<(), ClientError> {
    let body = Bytes::copy_from_slice(sealed);
    let request = http::Request::put("/")
        .header(TTL_HEADER, ttl.as_secs().max(1))
        .body(Full::new(body.clone()))
        .map_err(|_| ClientError::BadUrl(url.to_owned()))?;
    call(url, request, Some((keys, &body))).await.map(drop)
}

/// Forgets this node at `url` (a node leaving the cluster).
pub async fn delete(url: &str, keys: &ClusterKeys) -> Result<(), ClientError> {
    let request = http::Request::delete("/")
        .body(Full::new(Bytes::new()))
        .map_err(|_| ClientError::BadUrl(url.to_owned()))?;
    call(url, request, Some((keys, &[]))).await.map(drop)
}

/// The raw list at `url` (see [`affiliates_url`]): a bundle, for
/// `AffiliateTable::merge_bundle`.
pub async fn fetch_bundle(url: &str) -> Result<Bytes, ClientError> {
    let request = http::Request::get("/")
        .body(Full::new(Bytes::new()))
        .map_err(|_| ClientError::BadUrl(url.to_owned()))?;
    call(url, request, None).await
}

/// The sealed records listed at `url`.
pub async fn fetch(url: &str) -> Result<Vec<Vec<u8>>, ClientError> {
    let body = fetch_bundle(url).await?;
    bundle::decode(&body)
        .map(|r| r.map(<[u8]>::to_vec))
        .collect::<Result<_, _>>()
        .map_err(|source| ClientError::Bundle {
            addr: redact(url),
            source,
        })
}

/// `url` without a path: how it appears in errors.
fn redact(url: &str) -> String {
    url.strip_prefix("http://")
        .and_then(|r| r.split('/').next())
        .unwrap_or(url)
        .to_owned()
}

/// Sends `request` to `url`; `prove` signs it with the cluster's keys
/// over its body.
async fn call(
    url: &str,
    mut request: http::Request<Full<Bytes>>,
    prove: Option<(&ClusterKeys, &[u8])>,
) -> Result<Bytes, ClientError> {
    if url.starts_with("https://") {
        return Err(ClientError::Https(url.to_owned()));
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ClientError::BadUrl(url.to_owned()))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let target =
        HostPort::parse_or(authority, 80).map_err(|_| ClientError::BadUrl(url.to_owned()))?;
    *request.uri_mut() = (if path.is_empty() { "/" } else { path })
        .parse()
        .map_err(|_| ClientError::BadUrl(url.to_owned()))?;
    if let Some((keys, body)) = prove {
        let path = request.uri().path().to_owned();
        let now = crate::record::unix_ms(std::time::SystemTime::now());
        let proof = crate::proof::sign(keys, request.method().as_str(), &path, now, body);
        request.headers_mut().insert(
            crate::proof::PROOF_HEADER,
            http::HeaderValue::from_str(&proof).map_err(|_| ClientError::BadUrl(url.to_owned()))?,
        );
    }
    request.headers_mut().insert(
        http::header::HOST,
        http::HeaderValue::from_str(authority).map_err(|_| ClientError::BadUrl(url.to_owned()))?,
    );
    let addr = target.to_string();
    tokio::time::timeout(TIMEOUT, exchange(&addr, request))
        .await
        .map_err(|_| ClientError::Timeout { addr: addr.clone() })?
}

async fn exchange(addr: &str, request: http::Request<Full<Bytes>>) -> Result<Bytes, ClientError> {
    let http = |source| ClientError::Http {
        addr: addr.to_owned(),
        source,
    };
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| ClientError::Connect {
            addr: addr.to_owned(),
            source,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(http)?;
    let conn = tokio::spawn(conn);
    let response = sender.send_request(request).await.map_err(http)?;
    let status = response.status();
    if !status.is_success() {
        conn.abort();
        return Err(ClientError::Status {
            addr: addr.to_owned(),
            status,
        });
    }
    let body = Limited::new(response.into_body(), MAX_BUNDLE_BYTES)
        .collect()
        .await
        .map_err(|e| match e.downcast::<hyper::Error>() {
            Ok(e) => http(*e),
            Err(_) => ClientError::TooLarge {
                addr: addr.to_owned(),
            },
        })?;
    conn.abort();
    Ok(body.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::{ID, SECRET};

    #[test]
    fn urls() {
        let keys = ClusterKeys::new(&ID, &SECRET);
        let list = affiliates_url("http://disco:3000/", &keys);
        assert_eq!(
            list,
            format!(
                "http://disco:3000/v1/clusters/{}/affiliates",
                keys.cluster_key()
            )
        );
        assert_eq!(
            affiliate_url("http://disco:3000", &keys, "n1"),
            format!("{list}/{}", keys.affiliate_id("n1"))
        );
        assert_eq!(redact(&list), "disco:3000");
    }

    #[tokio::test]
    async fn bad_urls_fail_before_connecting() {
        for url in ["ftp://x/", "http:///path", "disco:3000/x"] {
            assert!(
                matches!(fetch(url).await, Err(ClientError::BadUrl(_))),
                "{url}"
            );
        }
        assert!(matches!(
            fetch("https://disco/v1").await,
            Err(ClientError::Https(_))
        ));
    }
}
