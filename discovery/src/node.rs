//! Running the service as a process: the standalone `slate-discovery`
//! binary and the copy a control-plane node runs (`/usr/bin/slate-discovery`
//! in the image, a name of the multi-call `slated`, started by machined
//! when the mesh is on and the config names no other service).

use std::net::{Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use std::path::Path;

use slate_common::constants::{DISCOVERY_PORT, MACHINE_CONFIG_FILE};

use crate::record::ClusterKeys;
use crate::service::{self, Limits, Service, SystemClock};

/// Where a node's copy listens: every address, [`DISCOVERY_PORT`] (the
/// port networkd assumes when `cluster.mesh.discovery.endpoint` is unset).
pub const NODE_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V6(Ipv6Addr::UNSPECIFIED), DISCOVERY_PORT);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("starting the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("the published config {path}: {why}")]
    Config { path: String, why: String },
    #[error("listening on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The cluster keys from the config machined published: a node's copy
/// takes writes only from members of its cluster. Only `cluster.id` and
/// `cluster.secret` are read (serde skips the rest), so this crate needs no
/// config schema.
pub fn published_cluster_keys(path: &Path) -> Result<ClusterKeys, ServeError> {
    #[derive(serde::Deserialize)]
    struct Published {
        cluster: Cluster,
    }
    #[derive(serde::Deserialize)]
    struct Cluster {
        id: Option<String>,
        secret: Option<String>,
    }
    let unusable = |why: String| ServeError::Config {
        path: path.display().to_string(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| unusable(e.to_string()))?;
    let published: Published = serde_json::from_str(&text).map_err(|e| unusable(e.to_string()))?;
    let (Some(id), Some(secret)) = (published.cluster.id, published.cluster.secret) else {
        return Err(unusable("no cluster.id and cluster.secret".into()));
    };
    ClusterKeys::from_config(&id, &secret).map_err(|e| unusable(e.to_string()))
}

/// Serves on `listen` with `limits` until killed; with `members`, only
/// that cluster, and only writes that prove membership.
pub fn serve(
    listen: SocketAddr,
    limits: Limits,
    members: Option<ClusterKeys>,
) -> Result<(), ServeError> {
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
            let mut service = Service::new(limits, Arc::new(SystemClock));
            if let Some(keys) = members {
                service = service.members_only(Arc::new(keys));
            }
            let service = Arc::new(service);
            service::run(listener, service).await;
            Ok(())
        })
}

/// What a node's copy keeps: it serves one cluster, and takes writes only
/// with a proof of membership, so its tables are small.
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
    let members = match published_cluster_keys(Path::new(MACHINE_CONFIG_FILE)) {
        Ok(keys) => keys,
        Err(e) => {
            // machined starts this copy only with a config; it restarts it.
            tracing::error!("slate-discovery: {e}");
            return ExitCode::FAILURE;
        }
    };
    match serve(NODE_LISTEN, node_limits(), Some(members)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("slate-discovery: {}", slate_common::error::chain(&e));
            ExitCode::FAILURE
        }
    }
}
