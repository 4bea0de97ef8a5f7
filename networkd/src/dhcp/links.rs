//! DHCP clients on the links the machine config asks for (`dhcp: true`,
//! and DHCPv6 for `dhcp6: true`),
//! beside the one networkd starts at boot on the first link or `ip=`'s.
//! One client per link, each with an applier of its own that shares the
//! ready file and the node's [`crate::names`].

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use rtnetlink::Handle;

use crate::ipv4_setup::Applier;
use crate::link;
use crate::names::SharedNames;
use crate::ready::SharedReady;

/// Starts DHCP clients, at most one per link.
#[derive(Clone)]
pub struct DhcpLinks {
    handle: Handle,
    ready: SharedReady,
    names: SharedNames,
    running: Arc<Mutex<BTreeSet<String>>>,
    stop: Arc<tokio::sync::watch::Sender<bool>>,
    /// Held by every DHCPv4 client task; [`DhcpLinks::stop`] waits until
    /// all are dropped.
    alive: Arc<tokio::sync::Semaphore>,
}

/// DHCPv4 clients that can run at once (each holds one permit).
const MAX_CLIENTS: u32 = 1024;

impl DhcpLinks {
    pub fn new(handle: Handle, ready: SharedReady, names: SharedNames) -> Self {
        Self {
            handle,
            ready,
            names,
            running: Arc::default(),
            stop: Arc::new(tokio::sync::watch::Sender::new(false)),
            alive: Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS as usize)),
        }
    }

    /// A stop signal for a client and the permit that says it runs.
    pub fn stop_signal(
        &self,
    ) -> (
        super::client::Stop,
        Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        (
            self.stop.subscribe(),
            Arc::clone(&self.alive).try_acquire_owned().ok(),
        )
    }

    /// Stops every DHCPv4 client, each giving its lease back (RELEASE),
    /// and waits for them up to `grace`. Called on SIGTERM: init waits a
    /// few seconds before SIGKILL.
    pub async fn stop(&self, grace: std::time::Duration) {
        self.stop.send_replace(true);
        let all = self.alive.acquire_many(MAX_CLIENTS);
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("DHCP clients still stopping after {grace:?}");
        }
    }

    /// Marks `ifname` as having a client (the boot one); false if it had.
    pub fn claim(&self, ifname: &str) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ifname.to_owned())
    }

    fn release(&self, ifname: &str) {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(ifname);
    }

    /// An applier for one link's client.
    pub fn applier(&self) -> Applier {
        Applier::new(self.handle.clone(), self.ready.clone(), self.names.clone())
    }

    /// Starts a DHCPv6 client on `ifname` unless one runs there.
    pub fn ensure6(&self, ifname: &str) {
        self.spawn(
            format!("{ifname}/dhcp6"),
            ifname,
            "DHCPv6",
            |this, link| async move {
                let Err(e) =
                    crate::dhcp6::client::run(this.handle.clone(), link, this.names.clone()).await;
                Some(crate::error_chain(&e))
            },
        );
    }

    /// Starts a DHCPv4 client on `ifname` unless one runs there.
    pub fn ensure(&self, ifname: &str) {
        self.spawn(ifname.to_owned(), ifname, "DHCP", |this, link| async move {
            let mut applier = this.applier();
            let (stop, _alive) = this.stop_signal();
            // The client runs until stopped or a socket error.
            super::client::run(&link, &mut applier, None, stop)
                .await
                .err()
                .map(|e| crate::error_chain(&e))
        });
    }

    /// Claims `key` and runs `client` on link `ifname` (brought up first)
    /// in a task of its own; `client`'s error is logged. The claim is
    /// released when the client ends, or at once if the link does not
    /// exist (yet), to be tried again on the next call.
    fn spawn<F, Fut>(&self, key: String, ifname: &str, what: &'static str, client: F)
    where
        F: FnOnce(DhcpLinks, crate::link::LinkInfo) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Option<String>> + Send,
    {
        if !self.claim(&key) {
            return;
        }
        let this = self.clone();
        let ifname = ifname.to_owned();
        tokio::spawn(async move {
            let link = match link::by_name(&this.handle, &ifname).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!("{what} on {ifname}: {}", crate::error_chain(&e));
                    this.release(&key);
                    return;
                }
            };
            if let Err(e) = link::set_up(&this.handle, &link).await {
                tracing::warn!("{}", crate::error_chain(&e));
            }
            if let Some(why) = client(this.clone(), link).await {
                tracing::warn!("{what} on {ifname}: {why}");
            }
            this.release(&key);
        });
    }
}
