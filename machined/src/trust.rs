//! Signing with the machine CA key, which on a node only machined reads:
//! apid's server certificate (`slate.trust.v1`) and the client
//! configurations `slatectl config new` mints.
//!
//! - [`Local`], on machined's socket, for apid on the same node. apid
//!   sends a signing request for a key it made. A node that holds the CA
//!   key signs it for the names of the request that are this node's own
//!   ([`slate_common::host::api_names`]: hostname, loopback, addresses,
//!   `machine.certSANs`). A node without the key (a worker) keeps the same
//!   names and passes the request on, with them, to a control-plane
//!   node's [`Network`] service. Either way apid alone gets no certificate
//!   for another node's address.
//! - [`Network`], on [`TRUST_PORT`] of control-plane nodes (TLS with a
//!   certificate of the machine CA, no client certificate: the caller has
//!   none yet). It signs for a caller that shows the cluster's machine
//!   token, for the names the caller's machined chose (it cannot know a
//!   remote node's addresses): at most [`MAX_NAMES`], each an IP address
//!   or a host name; it drops those that are its own or the
//!   control-plane endpoint's. Like Talos's trustd, whoever holds that
//!   token (the config of every node made with `gen config` does) can have
//!   a server certificate made for other names: see docs/join.md. A worker
//!   that joined with a join token shows a machine token of its own
//!   instead, and gets only the names it registered with, and loopback.
//!   The service also takes registrations of joining nodes
//!   ([`crate::join`]).

use std::sync::Arc;

use slate_common::constants::{TRUST_PORT, TRUST_TOKEN_HEADER};
use slate_config::MachineConfig;
use slate_pki::request::filter_names;
use slate_pki::{Authority, ServerRequest};
use slate_proto::trust::trust_service_client::TrustServiceClient;
use slate_proto::trust::trust_service_server::{TrustService, TrustServiceServer};
use slate_proto::trust::{
    CertificateRequest, CertificateResponse, ProxyIdentityRequest, ProxyIdentityResponse,
    RegisterRequest, RegisterResponse,
};
use tonic::{Request, Response, Status};

use crate::join::Registry;
use crate::node::Node;

/// Names one request may ask the network service for.
pub const MAX_NAMES: usize = 64;

/// The largest request the network service decodes.
const MAX_REQUEST: usize = 64 * 1024;

/// How often the network service's certificate (valid a year) is made
/// anew.
use slate_common::constants::CERT_RENEW_EVERY as RENEW_EVERY;

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
    let Some(common_name) = names.first().cloned() else {
        return sign_nothing(&refused);
    };
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
        let allowed = slate_common::host::api_names(&config.machine.cert_sans);
        let (names, refused) = filter_names(&csr.names(), &allowed);
        if !refused.is_empty() {
            tracing::warn!(
                "apid's certificate request names {} that are not this node's: not signed for them",
                refused.join(", ")
            );
        }
        if config.machine.ca.key.is_none() {
            if names.is_empty() {
                return sign_nothing(&refused);
            }
            let mut signed =
                signed_remotely(&config, csr_pem, names, self.remote.as_deref()).await?;
            // Ours first, then what the control plane kept out.
            signed.refused_names.splice(0..0, refused);
            tracing::info!("apid's certificate signed by the control plane");
            return Ok(Response::new(signed));
        }
        let (ca_pem, authority) = authority(&config)?;
        let response = sign(&authority, ca_pem, &csr, names.clone(), refused)?;
        tracing::info!("signed apid's certificate for {}", names.join(", "));
        Ok(response)
    }

    async fn register(
        &self,
        _request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        Err(Status::unimplemented(
            "nodes register with a control plane's trust service on the network (port 50001)",
        ))
    }

    async fn proxy_identity(
        &self,
        _request: Request<ProxyIdentityRequest>,
    ) -> Result<Response<ProxyIdentityResponse>, Status> {
        let (_, authority) = machine_authority(&self.node).await?;
        let identity = authority
            .issue_impersonator(&format!("apid {}", slate_common::host::hostname()))
            .map_err(|e| Status::internal(format!("issuing apid's proxy certificate: {e}")))?;
        tracing::info!("issued apid's proxy certificate (os:impersonator)");
        Ok(Response::new(ProxyIdentityResponse {
            crt_pem: identity.cert_pem,
            key_pem: identity.key_pem,
        }))
    }
}

fn sign_nothing(refused: &[String]) -> Result<Response<CertificateResponse>, Status> {
    Err(Status::invalid_argument(format!(
        "none of the names asked for may be signed (refused: {})",
        refused.join(", ")
    )))
}

/// Where the control plane's trust service is: the control-plane
/// endpoint's host on [`TRUST_PORT`] (`HOST:PORT`). Workers send their
/// signing requests there, and join URLs name it.
pub fn service_target(config: &MachineConfig) -> Result<String, Status> {
    let endpoint = &config.cluster.control_plane.endpoint;
    let mut at = slate_common::hostport::HostPort::from_https_url(endpoint, Some(6443))
        .map_err(|e| Status::failed_precondition(e.to_string()))?;
    at.port = TRUST_PORT;
    Ok(at.to_string())
}

/// Sends `csr_pem` to a control-plane node's trust service with the
/// machine token, trusting only a server of the machine CA, and checks
/// the answer chains to that CA.
async fn signed_remotely(
    config: &MachineConfig,
    csr_pem: String,
    names: Vec<String>,
    remote: Option<&str>,
) -> Result<CertificateResponse, Status> {
    let ca_pem = config
        .machine
        .ca
        .crt_pem()
        .map_err(|e| Status::internal(format!("machine.ca.crt: {e}")))?;
    let target = match remote {
        Some(target) => target.to_owned(),
        None => service_target(config)?,
    };
    let unavailable =
        |e: &dyn std::fmt::Display| Status::unavailable(format!("trust service at {target}: {e}"));
    let parsed = slate_client::parse_target(&target).map_err(|e| unavailable(&e))?;
    let tls = slate_pki::tls::client(&ca_pem, None).map_err(|e| unavailable(&e))?;
    let channel = slate_client::connect(&parsed, Arc::new(tls))
        .await
        .map_err(|e| unavailable(&e))?;
    let mut request = Request::new(CertificateRequest { csr_pem, names });
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
    // The CA compared as DER: the same certificate may be written with
    // other line breaks.
    let ca_der = slate_pki::pem_to_der(&ca_pem).ok();
    let same_ca = ca_der.is_some() && slate_pki::pem_to_der(&signed.ca_pem).ok() == ca_der;
    let chains = slate_pki::pem_to_der(&signed.crt_pem)
        .ok()
        .zip(ca_der)
        .is_some_and(|(crt, ca)| slate_pki::issued_by(&crt, &ca));
    if !same_ca || !chains {
        return Err(Status::internal(format!(
            "the trust service at {target} answered with a certificate of another CA"
        )));
    }
    Ok(signed)
}

/// The trust service on the network, for nodes without the CA key.
pub struct Network {
    node: Arc<Node>,
    /// Join tokens and registrations (control-plane nodes with etcd).
    registry: Option<Arc<Registry>>,
}

impl Network {
    pub fn new(node: Arc<Node>, registry: Option<Arc<Registry>>) -> Self {
        Self { node, registry }
    }
}

/// The caller's address, an IPv4 caller of the dual-stack socket as
/// 10.5.0.3, not ::ffff:10.5.0.3.
fn peer_of<T>(request: &Request<T>) -> String {
    request.remote_addr().map_or_else(
        || "unknown".to_owned(),
        |a| a.ip().to_canonical().to_string(),
    )
}

#[tonic::async_trait]
impl TrustService for Network {
    async fn certificate(
        &self,
        request: Request<CertificateRequest>,
    ) -> Result<Response<CertificateResponse>, Status> {
        let peer = peer_of(&request);
        let config = running(&self.node).await?;
        let shown = request
            .metadata()
            .get(TRUST_TOKEN_HEADER)
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default();
        // The cluster's token: any names but the control plane's. A joined
        // worker's own token: only the names it registered with.
        let limit = if slate_pki::same_secret(&shown, config.machine.token.as_bytes()) {
            None
        } else {
            let own = match (&self.registry, std::str::from_utf8(&shown)) {
                (Some(registry), Ok(text)) => registry.node_names(text).await?,
                _ => None,
            };
            let Some(mut allowed) = own else {
                tracing::warn!("trust service: refused {peer}: no valid machine token");
                return Err(Status::permission_denied(
                    "the machine token is missing or wrong",
                ));
            };
            allowed.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
            Some(allowed)
        };
        let request = request.into_inner();
        let csr = ServerRequest::from_pem(&request.csr_pem)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let names = if request.names.is_empty() {
            csr.names()
        } else {
            request.names
        };
        if names.is_empty() || names.len() > MAX_NAMES {
            return Err(Status::invalid_argument(format!(
                "a request names 1 to {MAX_NAMES} names, this one {}",
                names.len()
            )));
        }
        if let Some(bad) = names.iter().find(|n| !is_name(n)) {
            return Err(Status::invalid_argument(format!(
                "{:?} is neither an IP address nor a host name",
                bad.escape_debug().to_string()
            )));
        }
        let (names, not_theirs) = match &limit {
            Some(allowed) => filter_names(&names, allowed),
            None => (names, Vec::new()),
        };
        if !not_theirs.is_empty() {
            tracing::warn!(
                "trust service: not signing {} for {peer}: not the names it registered with",
                not_theirs.join(", ")
            );
        }
        // Names this control plane has are dropped, not the request: two
        // nodes behind different NATs may share a private address (every
        // QEMU user-network guest is 10.0.2.15).
        let (mut taken, names) = filter_names(&names, &own_names(&config));
        taken.extend(not_theirs);
        if !taken.is_empty() {
            tracing::warn!(
                "trust service: not signing {} for {peer}: this control plane's names",
                taken.join(", ")
            );
        }
        if names.is_empty() {
            return Err(Status::permission_denied(format!(
                "none of the names asked for is the caller's to have (refused: {})",
                taken.join(", ")
            )));
        }
        let (ca_pem, authority) = authority(&config)?;
        let response = sign(&authority, ca_pem, &csr, names.clone(), taken)?;
        tracing::info!(
            "trust service: signed an API certificate for {peer}: {}",
            names.join(", ")
        );
        Ok(response)
    }

    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let peer = peer_of(&request);
        let registry = self.registry.as_deref().ok_or_else(|| {
            Status::unavailable(
                "this control-plane node runs no etcd, where registrations are kept",
            )
        })?;
        let config = running(&self.node).await?;
        let answer = registry
            .register(&config, request.into_inner(), &peer)
            .await?;
        Ok(Response::new(answer))
    }

    async fn proxy_identity(
        &self,
        _request: Request<ProxyIdentityRequest>,
    ) -> Result<Response<ProxyIdentityResponse>, Status> {
        Err(Status::permission_denied(
            "apid's proxy certificate is issued on machined's socket only",
        ))
    }
}

/// An IP address or a host name (no wildcard, no control character).
fn is_name(name: &str) -> bool {
    name.parse::<std::net::IpAddr>().is_ok()
        || slate_config::is_dns_name(&name.to_ascii_lowercase())
}

/// Names of this control-plane node and of the control-plane endpoint,
/// which no caller may have: a certificate for them would let its holder
/// pose as the control plane. Loopback names stay free (every node's
/// apid answers on them).
fn own_names(config: &MachineConfig) -> Vec<String> {
    let mut names: Vec<String> = slate_common::host::api_names(&config.machine.cert_sans)
        .into_iter()
        .filter(|n| {
            n != "localhost"
                && !n
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        })
        .collect();
    names.extend(slate_config::endpoint_host(
        &config.cluster.control_plane.endpoint,
    ));
    names
}

/// Serves [`Network`] on `listener` with TLS (a certificate of the
/// machine CA for this node's names) until the process ends.
pub async fn serve_network(
    node: Arc<Node>,
    registry: Option<Arc<Registry>>,
    listener: tokio::net::TcpListener,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let config = running(&node).await?;
    let (ca_pem, authority) = authority(&config)?;
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
    // The CA goes with the chain: a joining node knows only its digest
    // (`slate_pki::tls::client_ca_pinned`).
    let chain = format!("{}\n{}", identity.cert_pem.trim_end(), ca_pem.trim());
    let tls = tonic::transport::ServerTlsConfig::new().identity(
        tonic::transport::Identity::from_pem(chain, identity.key_pem),
    );
    let addr = listener.local_addr().context("reading the trust address")?;
    tracing::info!("trust service on {addr}");
    tonic::transport::Server::builder()
        .tls_config(tls)
        .context("the trust service's TLS")?
        // Requests are a CSR or a registration: small. tonic's default
        // would decode 4 MiB from anyone.
        .add_service(
            TrustServiceServer::new(Network::new(node, registry))
                .max_decoding_message_size(MAX_REQUEST),
        )
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await
        .context("serving the trust service")
}

/// Serves [`Network`] on [`TRUST_PORT`] while the published config
/// (`config`, machined's own, followed like any daemon follows it) is a
/// control-plane node's with the CA key, started again when its CA, names
/// or endpoint change, stopped when it no longer is: a control-plane node
/// configured from maintenance mode serves at once; it is restarted with a
/// fresh certificate every [`RENEW_EVERY`]. A failure is logged;
/// the node's own API does not depend on it, only keyless workers do.
pub async fn run_network(
    node: Arc<Node>,
    registry: Option<Arc<Registry>>,
    config: std::path::PathBuf,
) {
    let mut feed = slate_config::feed::follow(config);
    let mut serving: Option<(Signer, tokio::task::JoinHandle<()>)> = None;
    loop {
        let want = feed.borrow_and_update().as_deref().and_then(Signer::of);
        if serving.as_ref().map(|(s, _)| s) != want.as_ref() {
            if let Some((_, task)) = serving.take() {
                task.abort();
                let _ = task.await;
            }
            serving = want.map(|signer| {
                let node = Arc::clone(&node);
                let registry = registry.clone();
                let task = tokio::spawn(async move {
                    let result = match slate_common::listen::any_address(TRUST_PORT).await {
                        Ok(listener) => serve_network(node, registry, listener).await,
                        Err(e) => Err(e.into()),
                    };
                    if let Err(e) = result {
                        tracing::error!(
                            "trust service: {e:#}; workers without the CA key cannot join"
                        );
                    }
                });
                (signer, task)
            });
        }
        tokio::select! {
            changed = feed.changed() => if changed.is_err() {
                return;
            },
            // A fresh certificate: restart the service.
            () = tokio::time::sleep(RENEW_EVERY) => {
                if let Some((_, task)) = serving.take() {
                    task.abort();
                    let _ = task.await;
                }
            }
        }
    }
}

/// What the network service's identity depends on.
#[derive(PartialEq)]
struct Signer {
    ca: slate_config::PemKeyPair,
    cert_sans: Vec<String>,
    endpoint: String,
}

impl Signer {
    fn of(config: &MachineConfig) -> Option<Self> {
        (config.machine.kind == slate_config::MachineType::Controlplane
            && config.machine.ca.key.is_some())
        .then(|| Self {
            ca: config.machine.ca.clone(),
            cert_sans: config.machine.cert_sans.clone(),
            endpoint: config.cluster.control_plane.endpoint.clone(),
        })
    }
}
