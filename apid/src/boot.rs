//! What apid waits for at start: machined's verdict on the machine config
//! and, for the server certificate's names, the node's first address.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rustls::ServerConfig;
use slate_config::MachineConfig;
use slate_pki::tls;
use slate_pki::{self as pki, Authority};

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
    Configured(Box<MachineConfig>),
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

/// What machined has published right now, if anything.
pub fn read_mode(paths: &Paths) -> Option<Mode> {
    if let Ok(text) = std::fs::read_to_string(&paths.config) {
        let source = paths.config.display().to_string();
        return Some(match MachineConfig::from_json(&text, &source) {
            Ok(config) => Mode::Configured(Box::new(config)),
            Err(e) => Mode::Maintenance(format!("published config is invalid: {e}")),
        });
    }
    std::fs::read_to_string(&paths.config_error)
        .ok()
        .map(|reason| Mode::Maintenance(reason.trim().to_owned()))
}

/// machined decides within milliseconds; if it publishes nothing for this
/// long it is crash-looping, and a reachable node in maintenance mode is more
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
        if let Some(mode) = read_mode(paths) {
            return mode;
        }
        if start.elapsed() > CONFIG_WAIT {
            return Mode::Maintenance(format!(
                "machined published no config within {}s",
                CONFIG_WAIT.as_secs()
            ));
        }
        tokio::time::sleep(POLL).await;
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
