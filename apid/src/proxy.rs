//! Forwarding calls to other nodes: `slatectl -e CP -n NODE …` reaches
//! this apid with the metadata [`NODE_HEADER`] naming NODE, and the call
//! goes on to NODE's apid, its answer (a stream included) coming back as
//! it is. The gate ([`crate::gate`]) has checked the caller for the method
//! here first; NODE checks it again.
//!
//! Trust (docs/join.md): this apid calls NODE with a client certificate of
//! the machine CA whose Organization is `os:impersonator`, issued by
//! machined, which signs it only on a node that holds the CA key (a
//! control-plane node). It names its caller's role in [`ROLE_HEADER`];
//! NODE believes that header from such a certificate only
//! ([`crate::auth::caller_role`]) and enforces the role itself. A caller
//! with an impersonator certificate cannot have its call forwarded again.
//! NODE's server certificate must chain to the machine CA and name the
//! address dialled, so a call is never handed to a stranger.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use slate_common::constants::{NODE_HEADER, ROLE_HEADER};
use slate_proto::trust::ProxyIdentityRequest;
use slate_proto::trust::trust_service_client::TrustServiceClient;
use tonic::Status;
use tonic::body::Body;
use tonic::transport::Channel;
use tower::ServiceExt as _;

use crate::boot::Mode;
use crate::live::SharedMode;

/// Connections kept to other nodes; beyond it the oldest are dropped.
const MAX_CHANNELS: usize = 64;

/// What forwarding needs: the mode (the CA nodes must chain to) and
/// machined, which issues the proxy certificate.
pub struct Forwarder {
    mode: SharedMode,
    machined: TrustServiceClient<Channel>,
    /// The client TLS, the CA it was made for, and when (its certificate
    /// is asked for anew after [`crate::live::RENEW_EVERY`]).
    tls: tokio::sync::Mutex<Option<(String, Arc<rustls::ClientConfig>, std::time::Instant)>>,
    channels: std::sync::Mutex<HashMap<String, Channel>>,
}

impl Forwarder {
    pub fn new(mode: SharedMode, machined: TrustServiceClient<Channel>) -> Arc<Self> {
        Arc::new(Self {
            mode,
            machined,
            tls: tokio::sync::Mutex::new(None),
            channels: std::sync::Mutex::new(HashMap::new()),
        })
    }

    fn ca_pem(&self) -> Result<String, Status> {
        match &*self.mode.read().unwrap_or_else(|e| e.into_inner()) {
            Mode::Configured(view) => Ok(view.ca_pem.clone()),
            Mode::Maintenance(_) => Err(Status::failed_precondition(
                "a node in maintenance mode forwards no calls",
            )),
        }
    }

    /// TLS to other nodes with the proxy certificate, asked of machined
    /// once per machine CA.
    async fn tls(&self) -> Result<Arc<rustls::ClientConfig>, Status> {
        let ca_pem = self.ca_pem()?;
        let mut cached = self.tls.lock().await;
        if let Some((ca, tls, made)) = &*cached
            && *ca == ca_pem
            && made.elapsed() < crate::live::RENEW_EVERY
        {
            return Ok(tls.clone());
        }
        let identity = self
            .machined
            .clone()
            .proxy_identity(ProxyIdentityRequest {})
            .await
            .map_err(|s| {
                Status::failed_precondition(format!(
                    "this node cannot forward calls to other nodes ({}): call a control-plane node with -e",
                    s.message()
                ))
            })?
            .into_inner();
        let identity = slate_pki::CertAndKey {
            cert_pem: identity.crt_pem,
            key_pem: identity.key_pem,
        };
        let tls = Arc::new(
            slate_pki::tls::client(&ca_pem, Some(&identity))
                .map_err(|e| Status::internal(format!("the proxy's TLS: {e}")))?,
        );
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        *cached = Some((ca_pem, tls.clone(), std::time::Instant::now()));
        Ok(tls)
    }

    async fn channel(&self, node: &str) -> Result<Channel, Status> {
        let tls = self.tls().await?;
        if let Some(c) = self
            .channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
        {
            return Ok(c.clone());
        }
        let target = slate_client::parse_target(node)
            .map_err(|e| Status::invalid_argument(format!("{NODE_HEADER}: {e}")))?;
        let channel = slate_client::connect(&target, tls).await.map_err(|e| {
            Status::unavailable(format!("{node}: {}", slate_common::error::chain(&e)))
        })?;
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if channels.len() >= MAX_CHANNELS {
            channels.clear();
        }
        channels.insert(node.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Sends `request` on to `node` as the caller's role, and returns its
    /// answer.
    async fn forward(
        self: Arc<Self>,
        node: String,
        mut request: http::Request<Body>,
    ) -> Result<http::Response<Body>, Status> {
        let role = caller_role(&request)?;
        let channel = self.channel(&node).await?;
        let headers = request.headers_mut();
        headers.remove(NODE_HEADER);
        headers.insert(ROLE_HEADER, http::HeaderValue::from_static(role.as_str()));
        let path = request.uri().path().to_owned();
        tracing::debug!("forwarding {path} to {node} as {role}");
        match channel.oneshot(request).await {
            Ok(response) => Ok(response),
            Err(e) => {
                // The next call dials again.
                self.channels
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&node);
                Err(Status::unavailable(format!(
                    "{node}: {}",
                    slate_common::error::chain(&e)
                )))
            }
        }
    }
}

/// The caller's own role, from its certificate, by the gate's rule
/// ([`crate::auth::caller_role`]: an impersonator's call naming a node is
/// refused, so nothing is forwarded twice). In maintenance mode the gate
/// let the caller in without a certificate: then there is none, and
/// nothing is forwarded.
fn caller_role(request: &http::Request<Body>) -> Result<slate_pki::Role, Status> {
    let caller = crate::auth::caller_of(request);
    let leaf = crate::auth::peer_leaf(&caller)?;
    crate::auth::caller_role(&caller, &leaf)
}

#[derive(Clone)]
pub struct ProxyLayer {
    forwarder: Arc<Forwarder>,
}

impl ProxyLayer {
    pub fn new(forwarder: Arc<Forwarder>) -> Self {
        Self { forwarder }
    }
}

impl<S> tower::Layer<S> for ProxyLayer {
    type Service = Proxy<S>;

    fn layer(&self, inner: S) -> Proxy<S> {
        Proxy {
            inner,
            forwarder: self.forwarder.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Proxy<S> {
    inner: S,
    forwarder: Arc<Forwarder>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> tower::Service<http::Request<Body>> for Proxy<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let Some(node) = request.headers().get(NODE_HEADER) else {
            return Box::pin(self.inner.call(request));
        };
        let node = match node.to_str() {
            Ok(n) => n.to_owned(),
            Err(_) => {
                let refused = Status::invalid_argument(format!("{NODE_HEADER} is not text"));
                return Box::pin(std::future::ready(Ok(refused.into_http())));
            }
        };
        let forwarder = self.forwarder.clone();
        Box::pin(async move {
            Ok(forwarder
                .forward(node, request)
                .await
                .unwrap_or_else(Status::into_http))
        })
    }
}
