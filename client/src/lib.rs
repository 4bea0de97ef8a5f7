//! Connecting to apid: our own TLS connector under tonic, so that one code
//! path serves mTLS, `--insecure` and tests, and the error of a refused
//! handshake reaches the user instead of a generic "transport error".

use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

use slate_common::constants::APID_PORT;
use slate_proto::machine::machine_service_client::MachineServiceClient;

/// Where to reach a node: `host` or `host:port` (IPv6 as `[::1]:50000`).
pub use slate_common::hostport::HostPort as Target;

/// `host` or `host:port` (IPv6 in brackets, or bare without a port),
/// apid's port by default.
pub fn parse_target(s: &str) -> Result<Target, ClientError> {
    Target::parse_or(s, APID_PORT).map_err(|_| ClientError::BadTarget(s.to_owned()))
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0:?} is not a valid endpoint (expected host or host:port)")]
    BadTarget(String),
    #[error("{0:?} is not a valid TLS server name")]
    BadServerName(String),
    #[error("connecting to {target}")]
    Connect {
        target: String,
        #[source]
        source: tonic::transport::Error,
    },
}

impl ClientError {
    /// True when the failure looks like QEMU's user network (or a node still
    /// booting) accepting and then dropping the connection: worth retrying,
    /// unlike a refused certificate.
    pub fn is_transient(&self) -> bool {
        let Self::Connect { source, .. } = self else {
            return false;
        };
        let mut err: Option<&(dyn std::error::Error + 'static)> = Some(source);
        while let Some(e) = err {
            if let Some(io) = e.downcast_ref::<io::Error>() {
                return matches!(
                    io.kind(),
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::UnexpectedEof
                        | io::ErrorKind::BrokenPipe
                ) && io
                    .get_ref()
                    .is_none_or(|inner| inner.downcast_ref::<rustls::Error>().is_none());
            }
            err = e.source();
        }
        false
    }
}

/// Opens a gRPC channel to `target` over TLS with `tls`.
pub async fn connect(target: &Target, tls: Arc<ClientConfig>) -> Result<Channel, ClientError> {
    let server_name = ServerName::try_from(target.host.clone())
        .map_err(|_| ClientError::BadServerName(target.host.clone()))?;
    let addr = target.to_string();
    let connector = tokio_rustls::TlsConnector::from(tls);
    // The scheme only fills HTTP/2's :scheme; TLS is done by the connector.
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|source| ClientError::Connect {
            target: addr.clone(),
            source,
        })?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30));
    let dial_addr = addr.clone();
    endpoint
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let (connector, server_name, addr) =
                (connector.clone(), server_name.clone(), dial_addr.clone());
            async move {
                let tcp = TcpStream::connect(&addr).await?;
                tcp.set_nodelay(true)?;
                let tls = connector.connect(server_name, tcp).await?;
                Ok::<_, io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|source| ClientError::Connect {
            target: addr,
            source,
        })
}

/// A gRPC channel to a daemon's Unix socket on this node (machined's, for
/// apid). Connects lazily, and again after the daemon restarted, so the
/// caller may create it once at start.
pub fn local(socket: &std::path::Path) -> Channel {
    let socket = socket.to_owned();
    // The URI is a placeholder: the connector below decides where to dial.
    Endpoint::from_static("http://localhost").connect_with_connector_lazy(tower::service_fn(
        move |_: http::Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(&socket).await?;
                Ok::<_, io::Error>(TokioIo::new(stream))
            }
        },
    ))
}

/// The machine API on a channel.
pub fn machine(channel: Channel) -> MachineServiceClient<Channel> {
    MachineServiceClient::new(channel)
}

/// Adds [`NODE_HEADER`](slate_common::constants::NODE_HEADER) to every
/// call when set: the apid dialled forwards the call to that node
/// (`slatectl -e CP -n NODE`).
#[derive(Debug, Clone, Default)]
pub struct NodeHeader(Option<tonic::metadata::AsciiMetadataValue>);

impl NodeHeader {
    /// Calls for `node`, through whichever apid the channel reaches.
    pub fn to(node: &Target) -> Result<Self, ClientError> {
        node.to_string()
            .parse()
            .map(|v| Self(Some(v)))
            .map_err(|_| ClientError::BadTarget(node.to_string()))
    }
}

impl tonic::service::Interceptor for NodeHeader {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(node) = &self.0 {
            request
                .metadata_mut()
                .insert(slate_common::constants::NODE_HEADER, node.clone());
        }
        Ok(request)
    }
}

/// A channel to apid whose calls may be for another node ([`NodeHeader`]).
pub type Conn = tonic::service::interceptor::InterceptedService<Channel, NodeHeader>;

/// A channel for calls to the node it reaches.
pub fn direct(channel: Channel) -> Conn {
    Conn::new(channel, NodeHeader::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_default_to_apids_port() {
        let t = |s: &str| parse_target(s).map(|t| (t.host, t.port));
        assert_eq!(t("node-1").unwrap(), ("node-1".into(), 50000));
        assert_eq!(t("[::1]:7").unwrap(), ("::1".into(), 7));
        let e = parse_target("host:0").unwrap_err().to_string();
        assert!(e.contains("\"host:0\""), "{e}");
    }
}
