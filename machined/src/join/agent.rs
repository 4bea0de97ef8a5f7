//! The joining node's side: a node booted with `slate.join=` and no config
//! registers with the control plane's trust service and asks again until
//! it is accepted, then applies the config it is handed as a first config
//! (the same path as `slatectl apply-config` in maintenance mode).
//!
//! It keeps asking across control-plane restarts and outages, with a
//! backoff of 1 s doubling to 30 s, and reconnects each time: a control
//! plane that comes back finds the node registering again at most 30 s
//! later. The node key lives on /run for the boot (machined restarts keep
//! it); a node that reboots before it is accepted makes a new one, and its
//! old registration must be forgotten (docs/join.md).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message as _;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use slate_config::join::JoinUrl;
use slate_proto::machine::ApplyMode;
use slate_proto::trust::trust_service_client::TrustServiceClient;
use slate_proto::trust::{RegisterRequest, RegisterResponse, Registration};
use tonic::transport::Channel;

use crate::node::Node;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Each call's deadline.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Reads the node key from `path`, or makes one and keeps it there (0600).
pub fn node_key(path: &Path) -> anyhow::Result<Ed25519KeyPair> {
    use anyhow::Context as _;
    if let Ok(pkcs8) = std::fs::read(path)
        && let Ok(key) = Ed25519KeyPair::from_pkcs8(&pkcs8)
    {
        return Ok(key);
    }
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| anyhow::anyhow!("the random number generator failed"))?;
    slate_common::fs::write_atomic(path, pkcs8.as_ref(), 0o600)
        .with_context(|| format!("keeping the node key in {}", path.display()))?;
    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|_| anyhow::anyhow!("the node key just made does not load"))
}

/// One signed registration, sent at `sent_at_ms`.
pub fn registration(
    url: &JoinUrl,
    key: &Ed25519KeyPair,
    sent_at_ms: u64,
    sys: &Path,
) -> RegisterRequest {
    let registration = Registration {
        token: url.token.to_string(),
        node_key: key.public_key().as_ref().to_vec(),
        sent_at_ms,
        facts: Some(super::facts::gather(sys)),
    }
    .encode_to_vec();
    let signature = key.sign(&registration).as_ref().to_vec();
    RegisterRequest {
        registration,
        signature,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn connect(url: &JoinUrl) -> anyhow::Result<TrustServiceClient<Channel>> {
    let tls = slate_pki::tls::client_ca_pinned(url.ca_sha256)?;
    let target = slate_client::parse_target(&url.target)?;
    let channel = slate_client::connect(&target, Arc::new(tls)).await?;
    Ok(TrustServiceClient::new(channel))
}

/// Registers until the node has a config: its own from the control
/// plane, or one applied meanwhile by other means. Never returns early on
/// an error: a node that gave up would be lost until someone rebooted it.
pub async fn run(node: Arc<Node>, url: JoinUrl, key_file: PathBuf) {
    let key = loop {
        match node_key(&key_file) {
            Ok(key) => break key,
            Err(e) => {
                tracing::error!("join: {e:#}; trying again in 30 s");
                tokio::time::sleep(MAX_BACKOFF).await;
            }
        }
    };
    tracing::info!("join: registering with {}", url.redacted());
    let mut client: Option<TrustServiceClient<Channel>> = None;
    let mut backoff = FIRST_BACKOFF;
    let mut last_sent = 0;
    let mut said = String::new();
    let mut say = |line: String, error: bool| {
        // Each distinct state once, not at every attempt.
        if line != said {
            if error {
                tracing::warn!("{line}");
            } else {
                tracing::info!("{line}");
            }
            said = line;
        }
    };
    loop {
        if node.configs().await.0.is_some() {
            tracing::info!("join: the node has a config; registration ends");
            return;
        }
        let answer = async {
            if client.is_none() {
                client = Some(connect(&url).await?);
            }
            let Some(c) = client.as_mut() else {
                unreachable!("connected above");
            };
            last_sent = now_ms().max(last_sent + 1);
            let request = registration(&url, &key, last_sent, Path::new("/sys"));
            let response = tokio::time::timeout(CALL_TIMEOUT, c.register(request))
                .await
                .map_err(|_| anyhow::anyhow!("no answer in {CALL_TIMEOUT:?}"))??;
            Ok::<RegisterResponse, anyhow::Error>(response.into_inner())
        }
        .await;
        let wait = match answer {
            Ok(r) if !r.config.is_empty() => {
                match node
                    .apply(&r.config, ApplyMode::Auto, false, None, true)
                    .await
                {
                    Ok(_) => {
                        tracing::info!(
                            "join: accepted as machine {}; the control plane's config is applied",
                            r.machine_id
                        );
                        return;
                    }
                    Err(status) => {
                        say(
                            format!(
                                "join: the config handed over does not apply: {}",
                                status.message()
                            ),
                            true,
                        );
                        MAX_BACKOFF
                    }
                }
            }
            Ok(r) => {
                backoff = FIRST_BACKOFF;
                match r.state.as_str() {
                    "rejected" => say(
                        format!("join: machine {} was rejected by an admin", r.machine_id),
                        true,
                    ),
                    _ => say(
                        format!(
                            "join: registered as machine {}; waiting to be accepted \
                             (slatectl machine accept {})",
                            r.machine_id, r.machine_id
                        ),
                        false,
                    ),
                }
                Duration::from_millis(u64::from(r.retry_after_ms))
                    .clamp(FIRST_BACKOFF, Duration::from_secs(300))
            }
            Err(e) => {
                client = None;
                let why = match e.downcast_ref::<tonic::Status>() {
                    Some(s) => s.message().to_owned(),
                    None => format!("{e:#}"),
                };
                say(format!("join: {}: {why}; trying again", url.target), true);
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}
