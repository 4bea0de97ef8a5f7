//! Signing with the machine CA key, which on a node only machined reads:
//! apid's server certificate (`slate.trust.v1`, on machined's socket) and
//! the client configurations `slatectl config new` mints.
//!
//! apid sends a signing request for a key it made; machined signs it for
//! the names of the request that are this node's own
//! ([`slate_common::host::api_names`]: the hostname, loopback, its
//! addresses and `machine.certSANs`). A compromised apid thus gets no
//! certificate for another node's address, and no CA key to mint one.

use std::sync::Arc;

use slate_config::MachineConfig;
use slate_pki::request::filter_names;
use slate_pki::{Authority, ServerRequest};
use slate_proto::trust::trust_service_server::TrustService;
use slate_proto::trust::{CertificateRequest, CertificateResponse};
use tonic::{Request, Response, Status};

use crate::node::Node;

pub struct Trust {
    node: Arc<Node>,
}

impl Trust {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

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
    let key = ca
        .key_pem()
        .map_err(|e| internal(&e))?
        .ok_or_else(|| Status::failed_precondition("this node does not hold the machine CA key"))?;
    let authority = Authority::from_pem(&crt, &key).map_err(|e| internal(&e))?;
    Ok((crt, authority))
}

#[tonic::async_trait]
impl TrustService for Trust {
    async fn certificate(
        &self,
        request: Request<CertificateRequest>,
    ) -> Result<Response<CertificateResponse>, Status> {
        let csr = ServerRequest::from_pem(&request.into_inner().csr_pem)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let config = running(&self.node).await?;
        let (ca_pem, authority) = authority(&config)?;
        let allowed = slate_common::host::api_names(&config.machine.cert_sans);
        let (names, refused) = filter_names(&csr.names(), &allowed);
        if !refused.is_empty() {
            tracing::warn!(
                "apid's certificate request names {} that are not this node's: not signed for them",
                refused.join(", ")
            );
        }
        let crt_pem = authority
            .issue_server_for(&csr, &slate_common::host::hostname(), &names)
            .map_err(|e| Status::internal(format!("signing apid's certificate: {e}")))?;
        tracing::info!("signed apid's certificate for {}", names.join(", "));
        Ok(Response::new(CertificateResponse {
            ca_pem,
            crt_pem,
            refused_names: refused,
        }))
    }
}
