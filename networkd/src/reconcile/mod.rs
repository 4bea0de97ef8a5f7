//! The reconciler: it keeps links, addresses and routes as
//! `machine.network` says, whatever happens to them.
//!
//! Each pass reads the kernel's state, computes the desired state from the
//! config ([`desired`]), plans the difference ([`model::plan`]) and carries
//! it out ([`netlink`]). Passes run when the config changes and whenever
//! the kernel reports a link, address or route change (so an address
//! deleted by hand is back within milliseconds), plus a slow timer as a
//! safety net. A pass with nothing to do writes nothing.
//!
//! networkd removes only what it added: routes carry its protocol number,
//! and the addresses it added are remembered in a file on /run, so a
//! restarted networkd still knows them.

pub mod desired;
pub mod model;
pub use slate_netlink::kernel::{Kernel, Rtnetlink};
pub use slate_netlink::state as netlink;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use slate_common::fs::write_atomic;
use slate_config::Network;

use model::{Addr, Op};

use crate::names::SharedNames;
use crate::ready::{Entry, SharedReady, Source};

/// The `networkstatus` resource: whether the config is in place, and what
/// keeps it from being so.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct NetworkStatus {
    /// A machine config is being applied (false: maintenance mode).
    pub configured: bool,
    /// The last pass left everything as the config says.
    pub converged: bool,
    /// Interfaces the config names that are not there; retried.
    pub missing: Vec<String>,
    /// Operations that failed in the last pass, with why; retried.
    pub failed: Vec<String>,
}

/// [`NetworkStatus`], shared with the status service, which is woken on
/// each change.
#[derive(Clone)]
pub struct SharedNetworkStatus {
    status: std::sync::Arc<std::sync::Mutex<NetworkStatus>>,
    changed: std::sync::Arc<tokio::sync::watch::Sender<()>>,
}

impl Default for SharedNetworkStatus {
    fn default() -> Self {
        Self {
            status: Default::default(),
            changed: std::sync::Arc::new(tokio::sync::watch::Sender::new(())),
        }
    }
}

impl SharedNetworkStatus {
    pub fn get(&self) -> NetworkStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set(&self, new: NetworkStatus) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if *status != new {
            *status = new;
            self.changed.send_replace(());
        }
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<()> {
        self.changed.subscribe()
    }
}

/// What one pass did.
#[derive(Debug, Default)]
pub struct Report {
    /// Operations carried out (each is one or more netlink writes).
    pub done: Vec<Op>,
    /// Operations that failed, with why.
    pub failed: Vec<String>,
    /// Interfaces the config names that are not there (yet).
    pub missing: Vec<String>,
    /// The configured addresses that are in place after the pass.
    pub present: BTreeSet<Addr>,
    /// The links as read at the start of the pass.
    pub links: Vec<model::ActualLink>,
}

pub struct Reconciler<K: Kernel = Rtnetlink> {
    kernel: K,
    owned_file: PathBuf,
    owned: BTreeSet<Addr>,
}

impl<K: Kernel> Reconciler<K> {
    /// `owned_file` remembers the addresses networkd added (see the module
    /// docs); it is read now if it exists.
    pub fn new(kernel: K, owned_file: PathBuf) -> Self {
        let owned = std::fs::read_to_string(&owned_file)
            .ok()
            .map(|t| parse_owned(&t))
            .unwrap_or_default();
        Self {
            kernel,
            owned_file,
            owned,
        }
    }

    /// One pass: read, plan, apply.
    pub async fn pass(&mut self, network: &Network) -> Result<Report, netlink::NetlinkError> {
        let actual = self.kernel.read().await?;
        let desired = desired::desired(network, &actual.links);
        let ops = model::plan(&desired, &actual, &self.owned);
        let mut report = Report {
            missing: desired.missing,

            ..Default::default()
        };
        let owned_before = self.owned.clone();
        let mut present: BTreeSet<Addr> = desired
            .addresses
            .intersection(&actual.addresses)
            .cloned()
            .collect();
        for op in ops {
            match self.kernel.execute(&op).await {
                Ok(()) => {
                    match &op {
                        Op::AddAddress(a) => {
                            self.owned.insert(a.clone());
                            present.insert(a.clone());
                        }
                        Op::DelAddress(a) => {
                            self.owned.remove(a);
                        }
                        _ => {}
                    }
                    report.done.push(op);
                }
                Err(e) => report.failed.push(slate_common::error::chain(&e)),
            }
        }
        report.present = present;
        report.links = actual.links.clone();
        // Forget addresses that are neither wanted nor there any more.
        self.owned
            .retain(|a| desired.addresses.contains(a) || actual.addresses.contains(a));
        if self.owned != owned_before {
            let text: String = self
                .owned
                .iter()
                .map(|a| format!("{} {}\n", a.ifname, a.net))
                .collect();
            if let Err(e) = write_atomic(&self.owned_file, text.as_bytes(), 0o644) {
                tracing::warn!("{}", slate_common::error::chain(&e));
            }
        }
        Ok(report)
    }
}

fn parse_owned(text: &str) -> BTreeSet<Addr> {
    text.lines()
        .filter_map(|l| {
            let (ifname, net) = l.split_once(' ')?;
            Some(Addr {
                ifname: ifname.to_owned(),
                net: net.trim().parse().ok()?,
            })
        })
        .collect()
}

/// The network slice of a published config; `None` while there is none
/// (maintenance mode), which is not the same as a config without links.
pub fn settings_from_config(config: Option<&slate_config::MachineConfig>) -> Option<Network> {
    config.map(|c| c.machine.network.clone())
}

/// The safety-net pass, and the first retry of a failed one.
const SAFETY_NET: Duration = Duration::from_secs(30);
const RETRY: Duration = Duration::from_secs(1);

/// Keeps the ready file's `config` entries to the configured IPv4
/// addresses in place (one per link, as the file holds), writing the file
/// only when they change.
fn sync_ready(ready: &SharedReady, present: &BTreeSet<Addr>, listed: &mut BTreeMap<String, Entry>) {
    let mut now = BTreeMap::new();
    for a in present {
        if let ipnet::IpNet::V4(v4) = a.net {
            now.entry(a.ifname.clone()).or_insert(Entry {
                ifname: a.ifname.clone(),
                address: v4.addr(),
                prefix_len: v4.prefix_len(),
                source: Source::Config,
            });
        }
    }
    if now == *listed {
        return;
    }
    let mut file = ready.lock().unwrap_or_else(|e| e.into_inner());
    for (ifname, entry) in &now {
        if listed.get(ifname) != Some(entry)
            && let Err(e) = file.set(entry.clone())
        {
            tracing::warn!("{}", slate_common::error::chain(&e));
        }
    }
    for gone in listed.keys().filter(|k| !now.contains_key(*k)) {
        if let Err(e) = file.remove(gone, Source::Config) {
            tracing::warn!("{}", slate_common::error::chain(&e));
        }
    }
    *listed = now;
}

/// What the reconciler works with.
pub struct Context {
    pub sysfs: PathBuf,
    /// The network slice of machined's published config.
    pub network: tokio::sync::watch::Receiver<Option<Network>>,
    /// The addresses networkd added.
    pub owned_file: PathBuf,
    pub ready: SharedReady,
    /// Gets the config's hostname and DNS.
    pub names: SharedNames,
    /// Where each pass's outcome is published.
    pub status: SharedNetworkStatus,
    /// Starts DHCP on the links the config asks it for (`None`: not here).
    pub dhcp: Option<crate::dhcp::links::DhcpLinks>,
}

/// A link the config wants a DHCP client on, and which ones.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DhcpWant {
    ifname: String,
    v4: bool,
    v6: bool,
}

/// The links the config wants DHCP clients on, by name (a VLAN's name is
/// `LINK.ID`; links chosen by deviceSelector are resolved by the pass).
fn dhcp_links(network: &Network, present: &[model::ActualLink]) -> Vec<DhcpWant> {
    let desired = desired::desired(network, present);
    let mut out = Vec::new();
    for iface in network.interfaces.iter().filter(|i| !i.ignore) {
        let name = iface.interface.clone().or_else(|| {
            let sel = iface.device_selector.as_ref()?;
            // The same resolution as the pass: the first link it matched.
            desired
                .links
                .iter()
                .find(|l| {
                    l.kind == model::Kind::Existing
                        && present
                            .iter()
                            .any(|p| p.name == l.name && desired::matches(sel, p))
                })
                .map(|l| l.name.clone())
        });
        let Some(name) = name else { continue };
        out.push(DhcpWant {
            ifname: name.clone(),
            v4: iface.dhcp,
            v6: iface.dhcp6,
        });
        out.extend(iface.vlans.iter().map(|v| DhcpWant {
            ifname: format!("{name}.{}", v.vlan_id),
            v4: v.dhcp,
            v6: v.dhcp6,
        }));
    }
    out.retain(|w| w.v4 || w.v6);
    out
}

/// The MAC of the first NIC (a link with a device), for the fallback
/// hostname.
fn first_nic_mac(links: &[model::ActualLink]) -> Option<Vec<u8>> {
    links
        .iter()
        .filter(|l| l.driver.is_some() || !l.bus_paths.is_empty())
        .find_map(|l| {
            let bytes: Result<Vec<u8>, _> = l
                .mac
                .split(':')
                .map(|b| u8::from_str_radix(b, 16))
                .collect();
            bytes.ok().filter(|b| b.len() == 6)
        })
}

/// Reconciles for ever: on config changes, kernel events and a timer.
pub async fn run(mut ctx: Context) {
    let (connection, handle, mut events) =
        match rtnetlink::new_multicast_connection(&netlink::EVENT_GROUPS) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("reconciler: opening rtnetlink: {e}");
                return;
            }
        };
    tokio::spawn(connection);
    let mut reconciler = Reconciler::new(
        Rtnetlink::new(handle, ctx.sysfs.clone()),
        ctx.owned_file.clone(),
    );
    // The config as it is at start counts as a change: the first pass
    // runs at once.
    ctx.network.mark_changed();
    let mut network: Option<Network> = None;
    let mut followed = true;
    let mut last_missing: Vec<String> = Vec::new();
    let mut listed = BTreeMap::new();
    let mut safety = tokio::time::interval(SAFETY_NET);
    let mut retry = Retry::new();
    loop {
        let mut due = false;
        tokio::select! {
            () = sleep_until(retry.at) => {
                retry.at = None;
                due = true;
            }
            changed = ctx.network.changed(), if followed => {
                followed = changed.is_ok();
                let now = ctx.network.borrow_and_update().clone();
                if now != network {
                    network = now;
                    ctx.names.set_config(network.as_ref());
                    due = true;
                }
            }
            true = netlink::next_burst(&mut events) => due = true,
            _ = safety.tick() => due = true,
        }
        // No config (maintenance mode): nothing to keep. A config without
        // interfaces still gets passes, which take back what networkd added.
        let Some(net) = network.as_ref() else {
            ctx.status.set(NetworkStatus::default());
            continue;
        };
        if !due {
            continue;
        }
        match reconciler.pass(net).await {
            Ok(report) => {
                for op in &report.done {
                    tracing::info!("network: {op}");
                }
                for failure in &report.failed {
                    tracing::warn!("network: {failure}");
                }
                retry.after(&report);
                share_report(&ctx, net, report, &mut listed, &mut last_missing);
            }
            Err(e) => {
                let why = slate_common::error::chain(&e);
                tracing::warn!("network: {why}");
                ctx.status.set(NetworkStatus {
                    configured: true,
                    converged: false,
                    missing: Vec::new(),
                    failed: vec![why],
                });
            }
        }
    }
}

/// When the next pass comes after one that left something undone.
///
/// After a failed operation (a link driver still loading, a link not yet
/// there), try again soon rather than at the next safety-net pass.
struct Retry {
    backoff: Duration,
    at: Option<tokio::time::Instant>,
}

impl Retry {
    fn new() -> Self {
        Self {
            backoff: RETRY,
            at: None,
        }
    }

    fn after(&mut self, report: &Report) {
        // Retry what failed soon, then less and less often: a failure that
        // repeats (an MTU the NIC refuses) must not keep the daemon busy.
        if report.failed.is_empty() && report.missing.is_empty() {
            self.backoff = RETRY;
        } else {
            self.at = Some(tokio::time::Instant::now() + self.backoff);
            self.backoff = (self.backoff * 2).min(SAFETY_NET);
        }
    }
}

/// Sleeps until `at`; for ever when there is no `at`.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Passes on what a pass found: to the ready file, the fallback hostname,
/// the status resource and the DHCP clients, and to the log the links
/// still missing, once each time that list changes. `listed` and
/// `last_missing` are what earlier passes passed on.
fn share_report(
    ctx: &Context,
    net: &Network,
    report: Report,
    listed: &mut BTreeMap<String, Entry>,
    last_missing: &mut Vec<String>,
) {
    sync_ready(&ctx.ready, &report.present, listed);
    if let Some(mac) = first_nic_mac(&report.links) {
        ctx.names.offer_fallback(&mac);
    }
    ctx.status.set(NetworkStatus {
        configured: true,
        converged: report.failed.is_empty() && report.missing.is_empty(),
        missing: report.missing.clone(),
        failed: report.failed.clone(),
    });
    if let Some(dhcp) = &ctx.dhcp {
        for want in dhcp_links(net, &report.links) {
            if want.v4 {
                dhcp.ensure(&want.ifname);
            }
            if want.v6 {
                dhcp.ensure6(&want.ifname);
            }
        }
    }
    if report.missing != *last_missing {
        for m in &report.missing {
            tracing::warn!("network: {m}; waiting for it");
        }
        *last_missing = report.missing;
    }
}

#[cfg(test)]
mod tests;
