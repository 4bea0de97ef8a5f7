//! Following machined's published config while apid runs: the first
//! config applied in maintenance mode switches apid to mutual TLS, and a
//! changed config (new certSANs, a try rolled back) re-issues the
//! certificate. New connections get the new TLS configuration; the API's
//! view of the mode changes at the same moment.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use slate_pki::ServerKey;
use tokio::sync::watch;

use crate::boot::{self, Mode, Paths};

/// The published files change a handful of times in a node's life; a
/// quarter second is quick enough for a human at `apply-config` and costs
/// one stat-and-read of a tmpfs file each time.
const POLL: Duration = Duration::from_millis(250);

/// The mode every handler sees.
pub type SharedMode = Arc<RwLock<Mode>>;

/// Watches the published files and swaps TLS and mode when they change.
pub async fn follow(
    paths: Paths,
    key: Arc<ServerKey>,
    mode: SharedMode,
    tls: watch::Sender<Arc<ServerConfig>>,
) {
    // A config that could not be served is not retried until it changes.
    let mut failed: Option<Mode> = None;
    loop {
        tokio::time::sleep(POLL).await;
        let Some(published) = boot::read_mode(&paths) else {
            continue;
        };
        let current = mode.read().unwrap_or_else(|e| e.into_inner()).clone();
        if published == current || failed.as_ref() == Some(&published) {
            continue;
        }
        match boot::tls_for(&published, &key, &paths).await {
            Ok(config) => {
                tracing::info!(
                    "machine config changed: now {}",
                    match &published {
                        Mode::Configured(_) => "mutual TLS",
                        Mode::Maintenance(_) => "maintenance mode",
                    }
                );
                // Mode first: a connection accepted with the new TLS must
                // not meet the old mode's rules.
                *mode.write().unwrap_or_else(|e| e.into_inner()) = published;
                tls.send_replace(Arc::new(config));
            }
            // Keep serving as before; the next change may fix it.
            Err(e) => {
                tracing::error!("new machine config unusable for TLS: {e:#}");
                failed = Some(published);
            }
        }
    }
}
