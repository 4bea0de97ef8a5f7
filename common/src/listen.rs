//! Listening on a port of every address, as apid (50000) and machined's
//! trust service (50001) do.

use std::net::{Ipv6Addr, SocketAddr};

/// Binds `[::]:port`, which takes IPv4 and IPv6 clients alike (Linux's
/// default dual-stack socket); a kernel booted with IPv6 disabled gets
/// `0.0.0.0:port` instead. The error names both tries.
pub async fn any_address(port: u16) -> std::io::Result<tokio::net::TcpListener> {
    let dual = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
    match tokio::net::TcpListener::bind(dual).await {
        Ok(listener) => Ok(listener),
        Err(v6) => {
            let v4 = SocketAddr::from(([0, 0, 0, 0], port));
            tokio::net::TcpListener::bind(v4).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("listening on {dual}: {v6}; on {v4}: {e}"))
            })
        }
    }
}
