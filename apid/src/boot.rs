//! What apid waits for at start: machined's verdict on the machine config
//! and, for the server certificate's names, the node's first address.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use slate_config::MachineConfig;
use slate_config::feed::{self, Feed};
use slate_pki::tls;
use slate_pki::{self as pki, Authority};
use tokio::sync::watch;

/// Files the other daemons publish and machined's socket (see
/// `slate_common::constants`).
#[derive(Debug, Clone)]
pub struct Paths {
    pub config: PathBuf,
    pub config_error: PathBuf,
    pub network_ready: PathBuf,
    pub machined_socket: PathBuf,
    pub networkd_socket: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Configured(Arc<MachineConfig>),
    /// No usable config; the reason is shown to `--insecure` clients.
    Maintenance(String),
}

impl Mode {
    /// The maintenance reason, if in maintenance mode.
    pub fn maintenance(&self) -> Option<&str> {
        match self {
            Self::Configured(_) => None,
            Self::Maintenance(reason) => Some(reason),
        }
    }
}

/// machined's verdict as apid follows it: the config feed (one parse per
/// version, see `slate_config::feed`) and the maintenance reason beside it.
pub struct Published {
    config: Feed,
    reason: watch::Receiver<Option<String>>,
}

impl Published {
    /// Starts following both files on the current runtime.
    pub fn follow(paths: &Paths) -> Published {
        Published {
            config: feed::follow(paths.config.clone()),
            reason: feed::follow_text(paths.config_error.clone()),
        }
    }

    /// What machined has published right now, if anything: a config wins
    /// over a reason (machined removes the reason when it publishes one).
    pub fn mode(&self) -> Option<Mode> {
        if let Some(config) = self.config.borrow().as_ref() {
            return Some(Mode::Configured(Arc::clone(config)));
        }
        self.reason.borrow().clone().map(Mode::Maintenance)
    }

    /// Waits until either file changed; `false` once neither is followed.
    pub async fn changed(&mut self) -> bool {
        tokio::select! {
            r = self.config.changed() => r.is_ok(),
            r = self.reason.changed() => r.is_ok(),
        }
    }
}

/// machined decides within milliseconds; if it publishes nothing for this
/// long it is crash-looping, and a reachable node in maintenance mode is more
/// useful than a silent one.
const CONFIG_WAIT: Duration = Duration::from_secs(30);
/// How long the server certificate waits for the node's first address.
/// Without one the certificate still carries the hostname and loopback.
const NETWORK_WAIT: Duration = Duration::from_secs(10);

/// Waits until machined has published either the config or a reason.
pub async fn wait_for_mode(published: &mut Published) -> Mode {
    let deadline = tokio::time::Instant::now() + CONFIG_WAIT;
    loop {
        if let Some(mode) = published.mode() {
            return mode;
        }
        match tokio::time::timeout_at(deadline, published.changed()).await {
            Ok(true) => {}
            Ok(false) | Err(_) => {
                return Mode::Maintenance(format!(
                    "machined published no config within {}s",
                    CONFIG_WAIT.as_secs()
                ));
            }
        }
    }
}

/// Builds the TLS configuration for `mode` with the server key `key`.
pub async fn tls_for(
    mode: &Mode,
    key: &pki::ServerKey,
    paths: &Paths,
) -> anyhow::Result<ServerConfig> {
    use anyhow::Context as _;
    if !slate_common::fs::wait_for_file(&paths.network_ready, NETWORK_WAIT).await {
        tracing::warn!(
            "no network address after {}s; certificate names only hostname and loopback",
            NETWORK_WAIT.as_secs()
        );
    }
    let hostname = crate::sysinfo::hostname();
    let mut names = vec![
        hostname.clone(),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    names.extend(
        crate::sysinfo::addresses()
            .into_iter()
            .map(|a| a.to_string()),
    );
    match mode {
        Mode::Configured(config) => {
            names.extend(config.machine.cert_sans.iter().cloned());
            let ca = &config.machine.ca;
            let ca_pem = ca.crt_pem().context("reading machine.ca.crt")?;
            let key_pem = ca
                .key_pem()
                .context("reading machine.ca.key")?
                .context("machine.ca.key is missing: this node cannot issue its API certificate")?;
            let authority =
                Authority::from_pem(&ca_pem, &key_pem).context("loading the machine CA")?;
            tracing::debug!("machine CA loaded");
            let identity = authority
                .issue_server(key, &hostname, &names)
                .context("issuing the API server certificate")?;
            tracing::info!("API certificate for {}", names.join(", "));
            Ok(tls::server_mtls(&identity, &ca_pem)?)
        }
        Mode::Maintenance(reason) => {
            tracing::error!("MAINTENANCE MODE: {reason}");
            tracing::warn!("maintenance mode: reachable as {}", names.join(", "));
            let identity = pki::self_signed_server(key, &hostname, &names)
                .context("creating a self-signed certificate")?;
            let der = pki::pem_to_der(&identity.cert_pem)?;
            tracing::warn!(
                "maintenance-mode certificate fingerprint (SHA-256) {}; apply a config with \
                 slatectl apply-config --insecure",
                pki::fingerprint(&der)
            );
            Ok(tls::server_anonymous(&identity)?)
        }
    }
}
