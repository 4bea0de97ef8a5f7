//! apid serves Slate's gRPC API on :50000.
//!
//! # Design
//! - apid runs as an unprivileged user (`constants::APID_UID`) with no
//!   capabilities, and never reads a CA key or the config itself: it
//!   follows machined's secret-free view of the config ([`boot`]).
//! - With a machine config, apid makes a key and has machined sign its
//!   server certificate from the machine CA (SANs: the node's addresses,
//!   hostname, loopback and `machine.certSANs`) and requires clients to
//!   present a certificate from the same CA. The role in the client certificate's Organization decides
//!   which calls it may make ([`auth`]).
//! - Without a usable config (machined published an error instead), apid
//!   runs in **maintenance mode**: a self-signed certificate whose
//!   fingerprint goes to the console, no client certificates, and only the
//!   calls that reveal nothing secret (`Version`, `Processes`) plus
//!   `ApplyConfiguration`, which gives the node its config. apid follows
//!   the published config ([`live`]): once one is applied, new connections
//!   need a client certificate of the machine CA.
//! - Calls that change the node are authorized here and forwarded to
//!   machined's Unix socket.
//! - A call naming another node (`x-slate-node`, `slatectl -e CP -n
//!   NODE`) is authorized here, then forwarded to that node's apid with
//!   the caller's role ([`proxy`]; the trust is in docs/join.md).
//! - The server certificate is issued anew when the config or the node's
//!   names change, and every 30 days ([`live`]).
//! - TLS is terminated by our own accept loop ([`listener`]) so that a
//!   refused client is logged with its address and reason.
//!
//! # Limitations
//! - Forwarding goes one hop, from a node that holds the machine CA key.

pub mod auth;
pub mod boot;
pub mod conn_limit;
pub mod gate;
pub mod join;
pub mod listener;
pub mod live;
pub mod machine;
pub mod proxy;
pub mod resource;
pub mod sysinfo;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use slate_common::constants;
use slate_proto::machine::machine_service_server::MachineServiceServer;

pub use boot::Paths;

/// The process: logging, a one-thread runtime, [`run`]. Returns only on
/// failure (init restarts apid).
pub fn main() -> std::process::ExitCode {
    slate_common::logging::init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(Paths::default())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Concurrent calls on one connection (HTTP/2 streams); `logs -f` and
/// `dmesg -f` each hold one.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 64;
const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Descriptors apid may hold: the connection caps plus its own files and
/// the sockets to machined and networkd, with room to spare.
const FD_LIMIT: u64 = 4096;

/// Raises the soft descriptor limit (1024 when inherited) to
/// [`FD_LIMIT`], or to the hard limit if that is lower: the connection cap
/// must be reached before the descriptors run out.
pub fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < FD_LIMIT => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, FD_LIMIT.min(hard), hard) {
                tracing::warn!("raising the descriptor limit: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("reading the descriptor limit: {e}"),
    }
}

/// Runs apid until the process is killed.
pub async fn run(paths: Paths) -> anyhow::Result<()> {
    raise_fd_limit();
    // Bind before waiting for the config: a client that connects early
    // waits in the backlog instead of being refused.
    let listener = slate_common::listen::any_address(constants::APID_PORT).await?;
    serve(paths, listener).await
}

/// Waits for machined's verdict on the config, builds the TLS identity and
/// serves on `listener`. Split from [`run`] so tests can use any port.
pub async fn serve(paths: Paths, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    let addr = listener
        .local_addr()
        .context("reading the listening address")?;
    // The key does not depend on the config: make it on another thread
    // while this one waits for machined, off the boot's critical path.
    let key = tokio::task::spawn_blocking(slate_pki::ServerKey::generate);
    let mut published = boot::Published::follow(&paths);
    let mode = boot::wait_for_mode(&mut published).await;
    tracing::debug!("config verdict received");
    let key = Arc::new(
        key.await
            .context("joining the key generation thread")?
            .context("generating the API server key")?,
    );
    // One connection to machined for the trust service and the
    // forwarded calls alike.
    let machined = slate_client::local(&paths.machined_socket);
    let trust = slate_proto::trust::trust_service_client::TrustServiceClient::new(machined.clone());
    let tls = boot::tls_for(&mode, &key, &paths, &trust)
        .await
        .context("setting up TLS")?;
    let maintenance = mode.maintenance().is_some();
    let mode = Arc::new(std::sync::RwLock::new(mode));
    let (tls_tx, tls_rx) = tokio::sync::watch::channel(Arc::new(tls.config));
    let forwarder = proxy::Forwarder::new(Arc::clone(&mode), trust.clone());
    tokio::spawn(live::follow(
        tls.names,
        published,
        paths.clone(),
        Arc::clone(&key),
        Arc::clone(&mode),
        tls_tx,
        trust,
    ));
    let join = join::JoinApi::new(machined.clone());
    let machined = slate_client::machine(machined);
    let networkd = slate_proto::resource::resource_service_client::ResourceServiceClient::new(
        slate_client::local(&paths.networkd_socket),
    );
    let authorizer = machine::Authorizer::new(mode.clone());
    let resources = resource::ResourceApi::new(authorizer.clone(), networkd);
    let service = machine::MachineApi::new(mode, machined);

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(slate_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building the reflection service")?;

    tracing::info!(
        "serving the API on {addr} ({})",
        if maintenance {
            "MAINTENANCE MODE, self-signed, no client certificates"
        } else {
            "mutual TLS"
        }
    );
    tonic::transport::Server::builder()
        // Streams per connection; connections are capped by the listener.
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        // A peer that vanished (no FIN) is noticed and its slot freed.
        .http2_keepalive_interval(Some(KEEPALIVE))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .tcp_keepalive(Some(KEEPALIVE))
        .layer(gate::GateLayer::new(authorizer))
        // After the gate: a call is forwarded only once this node let
        // its caller make it.
        .layer(proxy::ProxyLayer::new(forwarder))
        .add_service(reflection)
        .add_service(MachineServiceServer::new(service))
        .add_service(slate_proto::join::join_service_server::JoinServiceServer::new(join))
        .add_service(
            slate_proto::resource::resource_service_server::ResourceServiceServer::new(resources),
        )
        .serve_with_incoming(listener::tls_incoming(listener, tls_rx))
        .await
        .context("serving gRPC")
}

/// Where apid reads what the other daemons publish.
impl Default for Paths {
    fn default() -> Self {
        Self {
            api_view: PathBuf::from(constants::API_VIEW_FILE),
            config_error: PathBuf::from(constants::MACHINE_CONFIG_ERROR_FILE),
            network_ready: PathBuf::from(constants::NETWORK_READY_FILE),
            machined_socket: PathBuf::from(constants::MACHINED_SOCKET),
            networkd_socket: PathBuf::from(constants::NETWORKD_SOCKET),
        }
    }
}
