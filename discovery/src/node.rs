//! Running the service as a process: the standalone `slate-discovery`
//! binary and the copy a control-plane node runs (`/usr/bin/slate-discovery`
//! in the image, a name of the multi-call `slated`, started by machined
//! when the mesh is on and the config names no other service).

use std::net::{Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use slate_common::constants::DISCOVERY_PORT;

use crate::service::{self, Limits, Service, SystemClock};

/// Where a node's copy listens: every address, [`DISCOVERY_PORT`] (the
/// port networkd assumes when `cluster.mesh.discovery.endpoint` is unset).
pub const NODE_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V6(Ipv6Addr::UNSPECIFIED), DISCOVERY_PORT);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("starting the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("listening on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Serves on `listen` with `limits` until killed.
pub fn serve(listen: SocketAddr, limits: Limits) -> Result<(), ServeError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?
        .block_on(async {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|source| ServeError::Listen {
                    addr: listen,
                    source,
                })?;
            tracing::info!(
                "slate-discovery listening on {listen}, records kept {} s",
                limits.ttl.as_secs()
            );
            let service = Arc::new(Service::new(limits, Arc::new(SystemClock)));
            service::run(listener, service).await;
            Ok(())
        })
}

/// What a node's copy keeps: it serves one cluster, and anyone who reaches
/// port 3000 can store records (sealed or not), so its tables are small:
/// a stranger can fill them, but not the node's memory.
pub fn node_limits() -> Limits {
    Limits {
        max_clusters: 8,
        max_bytes: 16 << 20,
        ..Limits::default()
    }
}

/// The node's copy: [`node_limits`], no arguments (the image carries no
/// argument parser for it; run the standalone binary for options).
pub fn main() -> ExitCode {
    slate_common::logging::init();
    if std::env::args_os().len() > 1 {
        tracing::error!(
            "slate-discovery on a node takes no arguments (it listens on {NODE_LISTEN})"
        );
        return ExitCode::FAILURE;
    }
    match serve(NODE_LISTEN, node_limits()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("slate-discovery: {}", slate_common::error::chain(&e));
            ExitCode::FAILURE
        }
    }
}
