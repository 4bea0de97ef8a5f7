//! What apid waits for at start: machined's verdict on the machine config
//! and, for the server certificate's names, the node's first address.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustls::ServerConfig;
use slate_machinery::config::MachineConfig;
use slate_machinery::pki::{self, Authority};
use slate_machinery::tls;

/// Files the other daemons publish (see `slate_machinery::constants`).
#[derive(Debug, Clone)]
pub struct Paths {
    pub config: PathBuf,
    pub config_error: PathBuf,
    pub network_ready: PathBuf,
}

#[derive(Debug)]
pub enum Mode {
    Configured(Box<MachineConfig>),
    /// No usable config; the reason is shown to `--insecure` clients.
    Safe(String),
}

/// machined decides within milliseconds; if it publishes nothing for this
/// long it is crash-looping, and a reachable node in safe mode is more
/// useful than a silent one.
const CONFIG_WAIT: Duration = Duration::from_secs(30);
/// How long the server certificate waits for the node's first address.
/// Without one the certificate still carries the hostname and loopback.
const NETWORK_WAIT: Duration = Duration::from_secs(10);
/// The files appear once per boot, on tmpfs; checking this often costs
/// nothing and keeps boot-to-API latency low.
const POLL: Duration = Duration::from_millis(10);

/// Waits until machined has published either the config or an error.
pub async fn wait_for_mode(paths: &Paths) -> Mode {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&paths.config) {
            let source = paths.config.display().to_string();
            return match MachineConfig::from_json(&text, &source) {
                Ok(config) => Mode::Configured(Box::new(config)),
                Err(e) => Mode::Safe(format!("published config is invalid: {e}")),
            };
        }
        if let Ok(reason) = std::fs::read_to_string(&paths.config_error) {
            return Mode::Safe(reason.trim().to_owned());
        }
        if start.elapsed() > CONFIG_WAIT {
            return Mode::Safe(format!(
                "machined published no config within {}s",
                CONFIG_WAIT.as_secs()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn wait_for_file(path: &Path, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if path.exists() {
            return true;
        }
        tokio::time::sleep(POLL).await;
    }
    false
}

/// Builds the TLS configuration for `mode` with the server key `key`.
pub async fn tls_for(
    mode: &Mode,
    key: &pki::ServerKey,
    paths: &Paths,
) -> anyhow::Result<ServerConfig> {
    use anyhow::Context as _;
    if !wait_for_file(&paths.network_ready, NETWORK_WAIT).await {
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
        Mode::Safe(reason) => {
            tracing::error!("SAFE MODE: {reason}");
            let identity = pki::self_signed_server(key, &hostname, &names)
                .context("creating a self-signed certificate")?;
            let der = pki::pem_to_der(&identity.cert_pem)?;
            tracing::warn!(
                "safe-mode certificate fingerprint (SHA-256) {}",
                pki::fingerprint(&der)
            );
            Ok(tls::server_anonymous(&identity)?)
        }
    }
}
