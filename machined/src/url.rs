//! `slate.config=URL` on the kernel command line: the machine config from
//! an HTTP(S) server, as PXE and some clouds hand it out; and downloads of
//! large files (`machine.kubelet.source`), streamed to disk.
//!
//! The fetch retries with backoff (the network may still be coming up, the
//! server may be restarting), says each failure on the console, bounds the
//! body to the largest config there can be, and trusts the Mozilla roots
//! (`webpki-roots`) for https: the image has no CA bundle of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use slate_config::MAX_CONFIG_BYTES;

/// The kernel argument naming the URL.
pub const CMDLINE_KEY: &str = "slate.config=";
/// How long to keep trying before the node gives up and waits in
/// maintenance mode.
const GIVE_UP_AFTER: Duration = Duration::from_secs(120);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The URL given on `cmdline`, if any.
pub fn from_cmdline(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|arg| arg.strip_prefix(CMDLINE_KEY))
        .map(str::to_owned)
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Holds the URL as [`redacted`] shows it: errors reach the console
    /// and anonymous `version --insecure`.
    #[error("{0:?} is not an http:// or https:// URL with a host")]
    BadUrl(String),
    #[error("connecting to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS with {host}")]
    Tls {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP")]
    Http(#[from] hyper::Error),
    #[error("the server answered {0}")]
    Status(http::StatusCode),
    #[error("the answer is larger than allowed")]
    TooLarge,
    #[error("writing {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// `url` without what may be a credential (`user:pass@`, the query): how
/// it is shown on the console and to maintenance-mode clients.
pub fn redacted(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let rest = match rest.split_once('/') {
        Some((authority, path)) => {
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{host}/{path}")
        }
        None => rest.rsplit_once('@').map_or(rest, |(_, h)| h).to_owned(),
    };
    if scheme.is_empty() {
        rest
    } else {
        format!("{scheme}://{rest}")
    }
}

/// `text` (a kernel command line, or a log line quoting one) with every
/// `slate.config=URL` [`redacted`]: dmesg readers see the kernel's
/// "Command line:" record, and a URL may carry a token.
pub fn redact_cmdline(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(CMDLINE_KEY) {
        return std::borrow::Cow::Borrowed(text);
    }
    let words: Vec<String> = text
        .split(' ')
        .map(|word| match word.strip_prefix(CMDLINE_KEY) {
            Some(url) => format!("{CMDLINE_KEY}{}", redacted(url)),
            None => word.to_owned(),
        })
        .collect();
    std::borrow::Cow::Owned(words.join(" "))
}

/// Fetches `url`, retrying until it answers 200 or [`GIVE_UP_AFTER`].
pub async fn fetch_with_retries(url: &str) -> Result<Vec<u8>, FetchError> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(500);
    let mut attempt = 1;
    let shown = redacted(url);
    loop {
        match tokio::time::timeout(REQUEST_TIMEOUT, fetch(url)).await {
            Ok(Ok(body)) => return Ok(body),
            Ok(Err(FetchError::BadUrl(u))) => return Err(FetchError::BadUrl(u)),
            Ok(Err(e)) if start.elapsed() >= GIVE_UP_AFTER => return Err(e),
            Err(_) if start.elapsed() >= GIVE_UP_AFTER => {
                return Err(FetchError::Timeout(REQUEST_TIMEOUT));
            }
            Ok(Err(e)) => tracing::warn!(
                "fetching the machine config from {shown} (attempt {attempt}): {:#}; retrying in {delay:?}",
                anyhow::Error::from(e)
            ),
            Err(_) => tracing::warn!(
                "fetching the machine config from {shown} (attempt {attempt}): no answer within {REQUEST_TIMEOUT:?}; retrying"
            ),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
        attempt += 1;
    }
}

struct Parsed<'a> {
    tls: bool,
    target: slate_common::hostport::HostPort,
    path: &'a str,
}

fn parse(url: &str) -> Option<Parsed<'_>> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        (false, url.strip_prefix("http://")?)
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let default_port = if tls { 443 } else { 80 };
    let target = slate_common::hostport::HostPort::parse_or(authority, default_port).ok()?;
    Some(Parsed { tls, target, path })
}

/// One GET.
pub async fn fetch(url: &str) -> Result<Vec<u8>, FetchError> {
    let response = send(url).await?;
    let body = Limited::new(response.into_body(), MAX_CONFIG_BYTES)
        .collect()
        .await
        .map_err(|e| match e.downcast::<hyper::Error>() {
            Ok(h) => FetchError::Http(*h),
            Err(_) => FetchError::TooLarge,
        })?;
    Ok(body.to_bytes().to_vec())
}

/// One GET of a large file (a kubelet binary): streamed to `dest` (a new
/// file, mode `mode`, synced), at most `max_bytes`, while its SHA-256 is
/// computed; returns the digest, hex. The caller checks it before using
/// the file, and removes the file when it does not match.
pub async fn download(
    url: &str,
    dest: &std::path::Path,
    mode: u32,
    max_bytes: u64,
) -> Result<String, FetchError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let response = send(url).await?;
    let write_err = |source| FetchError::Write {
        path: dest.display().to_string(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(dest)
        .map_err(write_err)?;
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut body = response.into_body();
    let mut written: u64 = 0;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        written += data.len() as u64;
        if written > max_bytes {
            return Err(FetchError::TooLarge);
        }
        digest.update(&data);
        file.write_all(&data).map_err(write_err)?;
    }
    file.sync_all().map_err(write_err)?;
    Ok(slate_config::join::hex(digest.finish().as_ref()))
}

/// Connects (TLS for https), sends the GET and checks for 200 OK.
async fn send(url: &str) -> Result<http::Response<hyper::body::Incoming>, FetchError> {
    let u = parse(url).ok_or_else(|| FetchError::BadUrl(redacted(url)))?;
    let addr = u.target.to_string();
    let tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|source| FetchError::Connect {
            addr: addr.clone(),
            source,
        })?;
    if u.tls {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let config = rustls::ClientConfig::builder_with_provider(slate_pki::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| FetchError::Tls {
                host: u.target.host.clone(),
                source: std::io::Error::other(e),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from(u.target.host.clone())
            .map_err(|_| FetchError::BadUrl(redacted(url)))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|source| FetchError::Tls {
                host: u.target.host.clone(),
                source,
            })?;
        get(TokioIo::new(stream), &u).await
    } else {
        get(TokioIo::new(tcp), &u).await
    }
}

async fn get<T>(io: T, u: &Parsed<'_>) -> Result<http::Response<hyper::body::Incoming>, FetchError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = http::Request::get(u.path)
        .header(http::header::HOST, u.target.host.as_str())
        .header(http::header::USER_AGENT, "slate-machined")
        .body(Empty::<Bytes>::new())
        .map_err(|_| FetchError::BadUrl(redacted(u.path)))?;
    let response = sender.send_request(request).await?;
    if response.status() != http::StatusCode::OK {
        return Err(FetchError::Status(response.status()));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bad_url_is_reported_without_its_credentials() {
        let err = fetch_with_retries("ftp://admin:hunter2@10.0.2.2/c.yaml?k=v")
            .await
            .unwrap_err();
        let shown = format!("{err:#}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("k=v"),
            "{shown}"
        );
        assert!(shown.contains("ftp://10.0.2.2/c.yaml"), "{shown}");
    }

    #[test]
    fn the_url_comes_from_the_command_line() {
        assert_eq!(
            from_cmdline("console=ttyS0 slate.config=http://10.0.2.2:8080/cp.yaml quiet")
                .as_deref(),
            Some("http://10.0.2.2:8080/cp.yaml")
        );
        assert_eq!(from_cmdline("console=ttyS0 quiet"), None);
    }

    #[test]
    fn credentials_are_not_shown() {
        assert_eq!(
            redacted("https://user:pw@cfg.example.com/a.yaml?sig=secret#x"),
            "https://cfg.example.com/a.yaml"
        );
        assert_eq!(
            redacted("http://10.0.2.2:8080/cp.yaml"),
            "http://10.0.2.2:8080/cp.yaml"
        );
        assert_eq!(redacted("http://t@h?q"), "http://h");
    }

    #[test]
    fn urls_are_parsed_or_refused() {
        let p = parse("https://cfg.example.com/nodes/a.yaml").unwrap();
        assert!(p.tls && p.target.host == "cfg.example.com" && p.target.port == 443);
        assert_eq!(p.path, "/nodes/a.yaml");
        let p = parse("http://[fd00::1]:8080").unwrap();
        assert!(!p.tls && p.target.host == "fd00::1" && p.target.port == 8080 && p.path == "/");
        for bad in [
            "ftp://x/y",
            "http://",
            "http://h:0/",
            "http://h:x/",
            "http://[::1/",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }

    /// A local server that fails first, then serves: the fetch retries, and
    /// an oversized answer is refused.
    #[tokio::test]
    async fn retries_until_served_and_bounds_the_body() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for (i, body) in [
                "",
                "version: v1alpha1\n",
                &"#".repeat(MAX_CONFIG_BYTES + 10),
            ]
            .iter()
            .enumerate()
            {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let status = if i == 0 {
                    "503 Service Unavailable"
                } else {
                    "200 OK"
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        let url = format!("http://127.0.0.1:{port}/cp.yaml");
        let body = fetch_with_retries(&url).await.unwrap();
        assert_eq!(body, b"version: v1alpha1\n");
        assert!(matches!(fetch(&url).await, Err(FetchError::TooLarge)));
    }
}
