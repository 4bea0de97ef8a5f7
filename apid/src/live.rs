//! Following machined's published config while apid runs: the first
//! config applied in maintenance mode switches apid to mutual TLS, and a
//! changed config (new certSANs, a try rolled back) re-issues the
//! certificate. New connections get the new TLS configuration; the API's
//! view of the mode changes at the same moment.

use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use slate_pki::ServerKey;
use slate_proto::trust::trust_service_client::TrustServiceClient;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::boot::{self, Mode, Paths, Published};

/// The mode every handler sees.
pub type SharedMode = Arc<RwLock<Mode>>;

/// Follows the published files and swaps TLS and mode when they change.
pub async fn follow(
    mut published: Published,
    paths: Paths,
    key: Arc<ServerKey>,
    mode: SharedMode,
    tls: watch::Sender<Arc<ServerConfig>>,
    trust: TrustServiceClient<Channel>,
) {
    // A config that could not be served is not retried until it changes.
    let mut failed: Option<Mode> = None;
    while published.changed().await {
        let Some(now) = published.mode() else {
            continue;
        };
        let current = mode.read().unwrap_or_else(|e| e.into_inner()).clone();
        if now == current || failed.as_ref() == Some(&now) {
            continue;
        }
        match boot::tls_for(&now, &key, &paths, &trust).await {
            Ok(config) => {
                tracing::info!(
                    "machine config changed: now {}",
                    match &now {
                        Mode::Configured(_) => "mutual TLS",
                        Mode::Maintenance(_) => "maintenance mode",
                    }
                );
                // Mode first: a connection accepted with the new TLS must
                // not meet the old mode's rules.
                *mode.write().unwrap_or_else(|e| e.into_inner()) = now;
                tls.send_replace(Arc::new(config));
            }
            // Keep serving as before; the next change may fix it.
            Err(e) => {
                tracing::error!("new machine config unusable for TLS: {e:#}");
                failed = Some(now);
            }
        }
    }
}
