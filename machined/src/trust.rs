//! Signing with the machine CA key, which on a node only machined reads:
//! apid's server certificate (`slate.trust.v1`) and the client
//! configurations `slatectl config new` mints.
//!
//! - [`Local`], on machined's socket, for apid on the same node. apid
//!   sends a signing request for a key it made. A node that holds the CA
//!   key signs it for the names of the request that are this node's own
//!   ([`slate_common::host::api_names`]: hostname, loopback, addresses,
//!   `machine.certSANs`), so a compromised apid gets no certificate for
//!   another node's address. A node without the key (a worker) passes the
//!   request on to a control-plane node's [`Network`] service.
//! - [`Network`], on [`TRUST_PORT`] of control-plane nodes (TLS with a
//!   certificate of the machine CA, no client certificate: the caller has
//!   none yet). It signs for a caller that shows the cluster's machine
//!   token, for the names asked (it cannot know a remote node's
//!   addresses), at most [`MAX_NAMES`] of them, each an IP address or a
//!   DNS name. Like Talos's trustd: whoever holds the token (every
//!   node's config does) can have a server certificate made for any name.
//!   A server certificate only (no client authentication, no role): it
//!   cannot call any node's API.

use std::sync::Arc;

use slate_common::constants::{TRUST_PORT, TRUST_TOKEN_HEADER};
use slate_config::MachineConfig;
use slate_pki::request::filter_names;
use slate_pki::{Authority, ServerRequest};
use slate_proto::trust::trust_service_client::TrustServiceClient;
use slate_proto::trust::trust_service_server::{TrustService, TrustServiceServer};
use slate_proto::trust::{CertificateRequest, CertificateResponse};
use tonic::{Request, Response, Status};

use crate::node::Node;

/// Names one request may ask the network service for.
pub const MAX_NAMES: usize = 64;

/// The machine CA of the running config, with its key: (certificate PEM,
/// authority).
pub async fn machine_authority(node: &Node) -> Result<(String, Authority), Status> {
    authority(&running(node).await?)
}

async fn running(node: &Node) -> Result<MachineConfig, Status> {
    match node.configs().await {
        (Some((config, _)), _) => Ok(config),
        (None, _) => Err(Status::failed_precondition(
            "the node has no config (maintenance mode)",
        )),
    }
}

fn authority(config: &MachineConfig) -> Result<(String, Authority), Status> {
    let ca = &config.machine.ca;
    let internal = |e: &dyn std::fmt::Display| Status::internal(format!("machine CA: {e}"));
    let crt = ca.crt_pem().map_err(|e| internal(&e))?;
    let key = ca.key_pem().map_err(|e| internal(&e))?.ok_or_else(|| {
        Status::failed_precondition(
            "this node does not hold the machine CA key (a worker): a control-plane node signs",
        )
    })?;
    let authority = Authority::from_pem(&crt, &key).map_err(|e| internal(&e))?;
    Ok((crt, authority))
}

fn sign(
    authority: &Authority,
    ca_pem: String,
    csr: &ServerRequest,
    names: Vec<String>,
    refused: Vec<String>,
) -> Result<Response<CertificateResponse>, Status> {
    let common_name = names.first().cloned().unwrap_or_else(|| "node".to_owned());
    let crt_pem = authority
        .issue_server_for(csr, &common_name, &names)
        .map_err(|e| Status::invalid_argument(format!("signing the certificate: {e}")))?;
    Ok(Response::new(CertificateResponse {
        ca_pem,
        crt_pem,
        refused_names: refused,
    }))
}

/// The trust service on machined's socket.
pub struct Local {
    node: Arc<Node>,
    /// Where a node without the CA key sends requests (`HOST:PORT`);
    /// `None`: the control-plane endpoint's host, port [`TRUST_PORT`].
    remote: Option<String>,
}

impl Local {
    pub fn new(node: Arc<Node>, remote: Option<String>) -> Self {
        Self { node, remote }
    }
}

#[tonic::async_trait]
impl TrustService for Local {
    async fn certificate(
        &self,
        request: Request<CertificateRequest>,
    ) -> Result<Response<CertificateResponse>, Status> {
        let csr_pem = request.into_inner().csr_pem;
        let csr = ServerRequest::from_pem(&csr_pem)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let config = running(&self.node).await?;
        if config.machine.ca.key.is_none() {
            let signed = signed_remotely(&config, csr_pem, self.remote.as_deref()).await?;
            tracing::info!("apid's certificate signed by the control plane");
            return Ok(Response::new(signed));
        }
        let (ca_pem, authority) = authority(&config)?;
        let allowed = slate_common::host::api_names(&config.machine.cert_sans);
        let (names, refused) = filter_names(&csr.names(), &allowed);
        if !refused.is_empty() {
            tracing::warn!(
                "apid's certificate request names {} that are not this node's: not signed for them",
                refused.join(", ")
            );
        }
        tracing::info!("signed apid's certificate for {}", names.join(", "));
        sign(&authority, ca_pem, &csr, names, refused)
    }
}

/// Sends `csr_pem` to a control-plane node's trust service with the
/// machine token, trusting only a server of the machine CA, and checks
/// the answer chains to that CA.
async fn signed_remotely(
    config: &MachineConfig,
    csr_pem: String,
    remote: Option<&str>,
) -> Result<CertificateResponse, Status> {
    let ca_pem = config
        .machine
        .ca
        .crt_pem()
        .map_err(|e| Status::internal(format!("machine.ca.crt: {e}")))?;
    let target = match remote {
        Some(target) => target.to_owned(),
        None => {
            let endpoint = &config.cluster.control_plane.endpoint;
            let mut at = slate_common::hostport::HostPort::from_https_url(endpoint, Some(6443))
                .map_err(|e| Status::failed_precondition(e.to_string()))?;
            at.port = TRUST_PORT;
            at.to_string()
        }
    };
    let unavailable =
        |e: &dyn std::fmt::Display| Status::unavailable(format!("trust service at {target}: {e}"));
    let parsed = slate_client::parse_target(&target).map_err(|e| unavailable(&e))?;
    let tls = slate_pki::tls::client(&ca_pem, None).map_err(|e| unavailable(&e))?;
    let channel = slate_client::connect(&parsed, Arc::new(tls))
        .await
        .map_err(|e| unavailable(&e))?;
    let mut request = Request::new(CertificateRequest { csr_pem });
    let token = config
        .machine
        .token
        .parse()
        .map_err(|_| Status::internal("machine.token is not valid metadata"))?;
    request.metadata_mut().insert(TRUST_TOKEN_HEADER, token);
    let signed = TrustServiceClient::new(channel)
        .certificate(request)
        .await
        .map_err(|s| {
            Status::new(
                s.code(),
                format!("trust service at {target}: {}", s.message()),
            )
        })?
        .into_inner();
    let chains = slate_pki::pem_to_der(&signed.crt_pem)
        .ok()
        .zip(slate_pki::pem_to_der(&ca_pem).ok())
        .is_some_and(|(crt, ca)| slate_pki::issued_by(&crt, &ca));
    if signed.ca_pem != ca_pem || !chains {
        return Err(Status::internal(format!(
            "the trust service at {target} answered with a certificate of another CA"
        )));
    }
    Ok(signed)
}

/// The trust service on the network, for nodes without the CA key.
pub struct Network {
    node: Arc<Node>,
}

impl Network {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

#[tonic::async_trait]
impl TrustService for Network {
    async fn certificate(
        &self,
        request: Request<CertificateRequest>,
    ) -> Result<Response<CertificateResponse>, Status> {
        let peer = request
            .remote_addr()
            // An IPv4 caller of the dual-stack socket as 10.5.0.3, not
            // ::ffff:10.5.0.3.
            .map_or_else(
                || "unknown".to_owned(),
                |a| a.ip().to_canonical().to_string(),
            );
        let config = running(&self.node).await?;
        let shown = request
            .metadata()
            .get(TRUST_TOKEN_HEADER)
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default();
        if !slate_pki::same_secret(&shown, config.machine.token.as_bytes()) {
            tracing::warn!("trust service: refused {peer}: no valid machine token");
            return Err(Status::permission_denied(
                "the machine token is missing or wrong",
            ));
        }
        let csr = ServerRequest::from_pem(&request.into_inner().csr_pem)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let names = csr.names();
        if names.is_empty() || names.len() > MAX_NAMES {
            return Err(Status::invalid_argument(format!(
                "a request names 1 to {MAX_NAMES} names, this one {}",
                names.len()
            )));
        }
        let (ca_pem, authority) = authority(&config)?;
        tracing::info!(
            "trust service: signed an API certificate for {peer}: {}",
            names.join(", ")
        );
        sign(&authority, ca_pem, &csr, names, Vec::new())
    }
}

/// Serves [`Network`] on `listener` with TLS (a certificate of the
/// machine CA for this node's names) until the process ends.
pub async fn serve_network(
    node: Arc<Node>,
    listener: tokio::net::TcpListener,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let config = running(&node).await?;
    let (_, authority) = authority(&config)?;
    let key = slate_pki::ServerKey::generate().context("making the trust service's key")?;
    // Workers dial the control-plane endpoint's host, which may be this
    // node's address before networkd has set it up, or a name or address
    // in front of several control-plane nodes.
    let mut names = slate_common::host::api_names(&config.machine.cert_sans);
    names.extend(slate_config::endpoint_host(
        &config.cluster.control_plane.endpoint,
    ));
    let identity = authority
        .issue_server(&key, &slate_common::host::hostname(), &names)
        .context("issuing the trust service's certificate")?;
    let tls = tonic::transport::ServerTlsConfig::new().identity(
        tonic::transport::Identity::from_pem(identity.cert_pem, identity.key_pem),
    );
    let addr = listener.local_addr().context("reading the trust address")?;
    tracing::info!("trust service on {addr}");
    tonic::transport::Server::builder()
        .tls_config(tls)
        .context("the trust service's TLS")?
        .add_service(TrustServiceServer::new(Network::new(node)))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await
        .context("serving the trust service")
}

/// On a control-plane node that holds the CA key, serves [`Network`] on
/// [`TRUST_PORT`] (all addresses) until the process ends; elsewhere
/// returns at once. A failure is logged: the node's own API does not
/// depend on it, only workers that join later do.
pub async fn run_network(node: Arc<Node>) {
    use slate_config::MachineType;
    let Ok(config) = running(&node).await else {
        return;
    };
    if config.machine.kind != MachineType::Controlplane || config.machine.ca.key.is_none() {
        return;
    }
    let any = std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, TRUST_PORT));
    let listener = match tokio::net::TcpListener::bind(any).await {
        Ok(l) => Ok(l),
        Err(_) => {
            tokio::net::TcpListener::bind(std::net::SocketAddr::from(([0, 0, 0, 0], TRUST_PORT)))
                .await
        }
    };
    let result = match listener {
        Ok(listener) => serve_network(node, listener).await,
        Err(e) => Err(anyhow::anyhow!("listening on port {TRUST_PORT}: {e}")),
    };
    if let Err(e) = result {
        tracing::error!("trust service: {e:#}; workers without the CA key cannot join");
    }
}
