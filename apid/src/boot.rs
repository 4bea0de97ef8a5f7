//! What apid waits for at start: machined's verdict on the machine config
//! and, for the server certificate's names, the node's first address.
//!
//! apid reads no CA key and not the config itself: machined publishes a
//! secret-free view of it (`slate_config::ApiView`) and signs apid's
//! certificate request on its socket (`slate.trust.v1`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use slate_config::ApiView;
use slate_config::feed;
use slate_pki::tls;
use slate_pki::{self as pki, CertAndKey};
use slate_proto::trust::trust_service_client::TrustServiceClient;
use slate_proto::trust::{CertificateRequest, CertificateResponse};
use tokio::sync::watch;
use tonic::transport::Channel;

/// Files the other daemons publish and machined's socket (see
/// `slate_common::constants`).
#[derive(Debug, Clone)]
pub struct Paths {
    /// machined's view of the config for apid.
    pub api_view: PathBuf,
    pub config_error: PathBuf,
    pub network_ready: PathBuf,
    pub machined_socket: PathBuf,
    pub networkd_socket: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Configured(Arc<ApiView>),
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
    config: watch::Receiver<Option<Arc<ApiView>>>,
    reason: watch::Receiver<Option<String>>,
}

impl Published {
    /// Starts following both files on the current runtime.
    pub fn follow(paths: &Paths) -> Published {
        Published {
            config: feed::follow_view(paths.api_view.clone()),
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

/// How long apid waits for machined to sign: machined serves its socket
/// only once the disks are set up (the first boot partitions and formats
/// them), a little after it publishes the config apid waits for.
const SIGN_WAIT: Duration = Duration::from_secs(30);

/// Asks machined to sign `csr_pem`, retrying while its socket is not up
/// yet, or while it still signs with another CA than the view names (a
/// newer config whose view is on its way), until [`SIGN_WAIT`].
async fn signed_by_machined(
    trust: &TrustServiceClient<Channel>,
    csr_pem: String,
    ca_pem: &str,
) -> anyhow::Result<CertificateResponse> {
    let start = tokio::time::Instant::now();
    let deadline = start + SIGN_WAIT;
    loop {
        // Short at first: the API is ready the moment machined's socket
        // is (a connect to a missing socket costs nothing). Then slower:
        // on a worker the wait is for a control-plane node, each try a
        // TLS handshake there.
        let pause = if start.elapsed() < Duration::from_secs(2) {
            Duration::from_millis(25)
        } else {
            Duration::from_secs(1)
        };
        let why = match trust
            .clone()
            .certificate(CertificateRequest {
                csr_pem: csr_pem.clone(),
                names: Vec::new(),
            })
            .await
        {
            Ok(signed) if signed.get_ref().ca_pem == ca_pem => return Ok(signed.into_inner()),
            Ok(_) => anyhow::anyhow!(
                "machined signed with another machine CA than its published view names"
            ),
            Err(status) if status.code() == tonic::Code::Unavailable => {
                anyhow::Error::from(status).context("machined's socket is not answering")
            }
            Err(status) => {
                return Err(anyhow::Error::from(status)
                    .context("asking machined to sign the API certificate"));
            }
        };
        if tokio::time::Instant::now() + pause > deadline {
            return Err(why.context(format!("after {}s", SIGN_WAIT.as_secs())));
        }
        tracing::debug!("{why:#}; asking again");
        tokio::time::sleep(pause).await;
    }
}

/// A TLS configuration, and the names its certificate was asked for
/// (`None` in maintenance mode).
pub struct Issued {
    pub config: ServerConfig,
    pub names: Option<Vec<String>>,
}

/// Builds the TLS configuration for `mode` with the server key `key`; in
/// configured mode the certificate comes from machined (`trust`).
pub async fn tls_for(
    mode: &Mode,
    key: &pki::ServerKey,
    paths: &Paths,
    trust: &TrustServiceClient<Channel>,
) -> anyhow::Result<Issued> {
    use anyhow::Context as _;
    if !slate_common::fs::wait_for_file(&paths.network_ready, NETWORK_WAIT).await {
        tracing::warn!(
            "no network address after {}s; certificate names only hostname and loopback",
            NETWORK_WAIT.as_secs()
        );
    }
    let hostname = crate::sysinfo::hostname();
    match mode {
        Mode::Configured(view) => {
            let names = slate_common::host::api_names(&view.cert_sans);
            let csr_pem = key
                .request(&hostname, &names)
                .context("making the certificate request")?;
            let signed = signed_by_machined(trust, csr_pem, &view.ca_pem).await?;
            if !signed.refused_names.is_empty() {
                tracing::warn!(
                    "machined did not sign for {}: not this node's",
                    signed.refused_names.join(", ")
                );
            }
            tracing::info!("API certificate signed by machined");
            let identity = CertAndKey {
                cert_pem: signed.crt_pem,
                key_pem: key.to_pem(),
            };
            Ok(Issued {
                config: tls::server_mtls(&identity, &view.ca_pem)?,
                names: Some(names),
            })
        }
        Mode::Maintenance(reason) => {
            let names = slate_common::host::api_names(&[]);
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
            Ok(Issued {
                config: tls::server_anonymous(&identity)?,
                names: None,
            })
        }
    }
}
