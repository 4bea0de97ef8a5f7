//! Following machined's published config while apid runs: the first
//! config applied in maintenance mode switches apid to mutual TLS, and a
//! changed config (new certSANs, a try rolled back) re-issues the
//! certificate. So do new addresses (networkd's ready file changed and the
//! node's names with it: a LAN address set up after apid started, which
//! the control plane dials when it forwards calls), and time: the
//! certificate is renewed every [`RENEW_EVERY`], long before its year
//! runs out. New connections get the new TLS configuration; the API's
//! view of the mode changes at the same moment.

use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use slate_pki::ServerKey;
use slate_proto::trust::trust_service_client::TrustServiceClient;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::boot::{self, Mode, Paths, Published};

/// How often the API certificate (valid a year) is issued anew.
pub use slate_common::constants::CERT_RENEW_EVERY as RENEW_EVERY;

/// Why the certificate is looked at again.
enum Cause {
    Config,
    Addresses,
    Renewal,
}

/// The names a configured node's certificate carries now.
fn names_of(mode: &Mode) -> Option<Vec<String>> {
    match mode {
        Mode::Configured(view) => Some(slate_common::host::api_names(&view.cert_sans)),
        Mode::Maintenance(_) => None,
    }
}

/// The mode every handler sees.
pub type SharedMode = Arc<RwLock<Mode>>;

/// Follows the published files and swaps TLS and mode when they change.
pub async fn follow(
    issued_for: Option<Vec<String>>,
    mut published: Published,
    paths: Paths,
    key: Arc<ServerKey>,
    mode: SharedMode,
    tls: watch::Sender<Arc<ServerConfig>>,
    trust: TrustServiceClient<Channel>,
) {
    // A config that could not be served is not retried until it changes.
    let mut failed: Option<Mode> = None;
    let mut network = slate_config::feed::follow_text(paths.network_ready.clone());
    // The names of the certificate in use: those asked for, not the
    // node's now (an address may have come while machined signed).
    let mut issued_for = issued_for;
    let mut renewal =
        tokio::time::interval_at(tokio::time::Instant::now() + RENEW_EVERY, RENEW_EVERY);
    loop {
        let cause = tokio::select! {
            more = published.changed() => {
                if !more {
                    return;
                }
                Cause::Config
            }
            Ok(()) = network.changed() => Cause::Addresses,
            _ = renewal.tick() => Cause::Renewal,
        };
        let current = mode.read().unwrap_or_else(|e| e.into_inner()).clone();
        let configured = matches!(current, Mode::Configured(_));
        let now = match cause {
            Cause::Config => match published.mode() {
                Some(now) if now != current && failed.as_ref() != Some(&now) => now,
                _ => continue,
            },
            // Same mode, new names: only a configured node's certificate
            // names its addresses from a CA.
            Cause::Addresses if configured && names_of(&current) != issued_for => current,
            Cause::Renewal if configured => current,
            Cause::Addresses | Cause::Renewal => continue,
        };
        match boot::tls_for(&now, &key, &paths, &trust).await {
            Ok(boot::Issued { config, names }) => {
                issued_for = names;
                tracing::info!(
                    "{}: now {}",
                    match cause {
                        Cause::Config => "machine config changed",
                        Cause::Addresses => "addresses changed, certificate issued anew",
                        Cause::Renewal => "certificate renewed",
                    },
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
            Err(e) if matches!(cause, Cause::Config) => {
                tracing::error!("new machine config unusable for TLS: {e:#}");
                failed = Some(now);
            }
            // The certificate in use stays; the next change or renewal
            // tries again.
            Err(e) => tracing::error!("issuing the API certificate anew: {e:#}"),
        }
    }
}
