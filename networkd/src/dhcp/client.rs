//! Runs the DHCP state machine on a link ([`crate::lease_loop`]) and
//! carries out its actions.

use std::time::Instant;

use super::socket::{DhcpSocket, SocketError};
use super::state::{Action, Client};
use crate::ipv4_setup::{Applier, Setup};
use crate::lease_loop;
use crate::link::LinkInfo;

/// Room for any reply we asked for (option 57 says 1500) and then some.
const RECV_BUFFER: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error(transparent)]
    Socket(#[from] SocketError),
}

/// Tells the clients to stop: each gives its lease back and returns.
pub type Stop = tokio::sync::watch::Receiver<bool>;

/// DHCP on `link` until `stop` turns true; then the lease is released.
/// `hostname` (from `ip=`) is sent to the server.
pub async fn run(
    link: &LinkInfo,
    applier: &mut Applier,
    hostname: Option<String>,
    mut stop: Stop,
) -> Result<(), DhcpError> {
    let socket = DhcpSocket::bind(&link.name)?;
    let mut client = Client::new(&link.mac, hostname, fastrand::Rng::new(), Instant::now());
    let mut applied: Option<Setup> = None;
    let mut buf = vec![0u8; RECV_BUFFER];
    tracing::info!("{}: starting DHCP", link.name);
    loop {
        let actions = tokio::select! {
            actions = lease_loop::next(&mut client, &socket, &mut buf, "DHCP", &link.name) => actions,
            // The guard wait_for returns is not Send: drop it at once.
            () = async { drop(stop.wait_for(|stop| *stop).await) } => {
                tracing::info!("{}: stopping DHCP", link.name);
                for action in client.release(Instant::now()) {
                    execute(link, &socket, applier, &mut applied, action).await;
                }
                return Ok(());
            }
        };
        for action in actions {
            execute(link, &socket, applier, &mut applied, action).await;
        }
    }
}

async fn execute(
    link: &LinkInfo,
    socket: &DhcpSocket,
    applier: &mut Applier,
    applied: &mut Option<Setup>,
    action: Action,
) {
    match action {
        Action::Send { kind, to, bytes } => {
            tracing::debug!("{}: sending DHCP {kind:?} to {to}", link.name);
            if let Err(e) = socket.send(to, &bytes).await {
                // Retransmission takes care of it (e.g. no route to the
                // server while RENEWING).
                tracing::warn!("{}: sending DHCP {kind:?} to {to}: {e}", link.name);
            }
        }
        Action::Configure { new, .. } => {
            let setup = new.setup(Instant::now());
            let renewal = applied
                .as_ref()
                .is_some_and(|old| old.address == setup.address);
            match applier.apply(link, applied.as_ref(), &setup).await {
                Ok(()) if renewal => tracing::debug!("{}: renewed {}", link.name, setup.address),
                Ok(()) => tracing::info!("{}", setup.summary(&link.name)),
                Err(e) => tracing::error!("{}", crate::error_chain(&e)),
            }
            *applied = Some(setup);
        }
        Action::Deconfigure(lease) => {
            tracing::warn!(
                "{}: lost DHCP lease on {}, removing it",
                link.name,
                lease.address
            );
            let setup = applied
                .take()
                .unwrap_or_else(|| lease.setup(Instant::now()));
            if let Err(e) = applier.remove(link, &setup).await {
                tracing::error!("{}", crate::error_chain(&e));
            }
        }
    }
}
