//! Slate's network daemon.
//!
//! # Background
//! A Slate node has no shell and no distribution network scripts: networkd
//! alone makes it reachable. init (PID 1) starts it as root with stderr on
//! the console and restarts it with backoff if it exits.
//!
//! # Design
//! At boot: read `ip=` from the kernel command line ([`cmdline`]), bring up
//! `lo`, wait for the first Ethernet link ([`link`]) and configure it either
//! statically or with our own DHCPv4 client ([`dhcp`]). Everything that
//! touches the system goes through [`ipv4_setup::Applier`]: address and routes
//! over rtnetlink (routes tagged with protocol `dhcp`/`static`), MTU,
//! resolv.conf ([`resolv`]), hostname ([`hostname`]) and the ready file
//! other daemons wait for ([`ready`]). One tokio current-thread runtime, so
//! the idle daemon is a single thread of a few MB.
//!
//! Beside it, the [`reconcile`]r keeps `machine.network.interfaces` of the
//! published machine config applied: links (MTU, up, VLAN, bond, bridge,
//! dummy, device selectors), static addresses and routes, restored on
//! every kernel event and changed when the config changes.
//!
//! With `cluster.apiBalancer.enabled`, the [`balancer`] listens on
//! `127.0.0.1:7445` and forwards to the healthiest, closest control-plane
//! endpoint (the `apibalancer` resource).
//!
//! # Limitations
//! DHCPv6 ([`dhcp6`]) only on links the config marks `dhcp6: true`, and
//! its leases are not released at shutdown. At boot DHCP starts on the first Ethernet link (or `ip=`'s)
//! without waiting for the config, to keep it off the boot's critical path
//! (boot with `ip=off` to leave every link to the config); the config's
//! `dhcp: true` links get a client of their own when the config arrives
//! ([`dhcp::links`]); no ARP conflict check
//! (DHCPDECLINE) before using an address; the
//! MTU set from DHCP is not restored when the lease goes. The config's
//! hostname, nameservers and search domains win over `ip=`'s and DHCP's
//! ([`names`]); time is kept by an SNTP client
//! against `machine.time.servers` ([`timesync`]); NTP servers from DHCP are
//! not used yet.
//!
//! With `cluster.mesh.enabled`, the [`mesh`] controller runs the WireGuard
//! mesh (userspace, boringtun) and finds its peers through discovery and
//! gossip (`mesh-identity`, `mesh-peers`).

use std::convert::Infallible;
use std::path::{Path, PathBuf};

use slate_balancer as balancer;
use slate_common::constants;
use slate_config::feed;
use slate_mesh as mesh;
pub use slate_netlink::link;

pub mod cmdline;
pub mod dhcp;
pub mod dhcp6;
pub mod hostname;
pub mod ipv4;
pub mod ipv4_setup;
pub mod lease_loop;
pub mod names;
pub mod ready;
pub mod reconcile;
pub mod resolv;
pub mod resources;
pub mod timesync;

/// Paths and switches; production values from [`Options::default`], tests
/// override them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub cmdline: PathBuf,
    /// Root of sysfs (`/sys`), to tell NICs from virtual links.
    pub sysfs: PathBuf,
    pub resolv_conf: PathBuf,
    pub ready_file: PathBuf,
    /// machined's published config, whose `machine.network` is reconciled.
    pub config_file: PathBuf,
    /// The addresses networkd added (see [`reconcile`]).
    pub owned_file: PathBuf,
    /// Where networkd serves its resources ([`status`]).
    pub socket: PathBuf,
    /// Keep the clock synced ([`timesync`]); off in namespace tests, which
    /// share the host's clock.
    pub sync_time: bool,
    /// Off when running inside `ip netns exec`, which shares the host's
    /// UTS namespace.
    pub set_hostname: bool,
    /// The node's mesh key (on STATE, so the mesh identity survives
    /// reboots).
    pub mesh_key: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cmdline: constants::PROC_CMDLINE.into(),
            sysfs: "/sys".into(),
            resolv_conf: constants::RESOLV_CONF_FILE.into(),
            ready_file: constants::NETWORK_READY_FILE.into(),
            config_file: constants::MACHINE_CONFIG_FILE.into(),
            owned_file: constants::NETWORKD_OWNED_FILE.into(),
            socket: constants::NETWORKD_SOCKET.into(),
            sync_time: true,
            set_hostname: true,
            mesh_key: mesh::keys::KEY_FILE.into(),
        }
    }
}

impl Options {
    /// [`Options::default`] with overrides from the environment, for the
    /// network-namespace tests: `SLATE_NETWORKD_CMDLINE`, `_SYSFS`,
    /// `_RESOLV_CONF`, `_READY_FILE`, `_CONFIG`, `_OWNED_FILE`, `_SOCKET`,
    /// `_MESH_KEY`, and `_SET_HOSTNAME=0`, `_SYNC_TIME=0`.
    pub fn from_env_with(get: impl Fn(&str) -> Option<String>) -> Options {
        let mut opts = Options::default();
        let path = |key: &str, field: &mut PathBuf| {
            if let Some(v) = get(key).filter(|v| !v.is_empty()) {
                *field = v.into();
            }
        };
        path("SLATE_NETWORKD_CMDLINE", &mut opts.cmdline);
        path("SLATE_NETWORKD_SYSFS", &mut opts.sysfs);
        path("SLATE_NETWORKD_RESOLV_CONF", &mut opts.resolv_conf);
        path("SLATE_NETWORKD_READY_FILE", &mut opts.ready_file);
        path("SLATE_NETWORKD_CONFIG", &mut opts.config_file);
        path("SLATE_NETWORKD_OWNED_FILE", &mut opts.owned_file);
        path("SLATE_NETWORKD_SOCKET", &mut opts.socket);
        path("SLATE_NETWORKD_MESH_KEY", &mut opts.mesh_key);
        if get("SLATE_NETWORKD_SET_HOSTNAME").as_deref() == Some("0") {
            opts.set_hostname = false;
        }
        if get("SLATE_NETWORKD_SYNC_TIME").as_deref() == Some("0") {
            opts.sync_time = false;
        }
        opts
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("opening rtnetlink socket")]
    Netlink(#[source] std::io::Error),
    #[error("creating directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Link(#[from] link::LinkError),
    #[error(transparent)]
    Apply(#[from] ipv4_setup::ApplyError),
    #[error(transparent)]
    Ready(#[from] ready::ReadyError),
    #[error(transparent)]
    Dhcp(#[from] dhcp::client::DhcpError),
    #[error(transparent)]
    Balancer(#[from] balancer::BalancerError),
    #[error("installing the SIGTERM handler")]
    Signal(#[source] std::io::Error),
    #[error("the boot network task failed: {0}")]
    Task(String),
}

/// How long the DHCP clients get to give their leases back on SIGTERM
/// (init waits longer before SIGKILL).
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Configures the network as the command line says and keeps it so.
/// Returns `Ok` when stopped by SIGTERM (leases released), `Err` on an
/// error that a restart by init may cure.
pub async fn run(opts: Options) -> Result<(), RunError> {
    // First, so a SIGTERM at any point from here on is ours to handle.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(RunError::Signal)?;
    let config = cmdline::read(&opts.cmdline).unwrap_or_else(|e| {
        tracing::error!("{}; falling back to DHCP", error_chain(&e));
        cmdline::IpConfig::default()
    });

    let (connection, handle, _) = rtnetlink::new_connection().map_err(RunError::Netlink)?;
    tokio::spawn(connection);

    let lo = link::by_name(&handle, "lo").await?;
    link::set_up(&handle, &lo).await?;

    for path in [
        &opts.resolv_conf,
        &opts.ready_file,
        &opts.owned_file,
        &opts.socket,
    ] {
        create_parent(path)?;
    }
    let ready: ready::SharedReady = std::sync::Arc::new(std::sync::Mutex::new(
        ready::ReadyFile::new(&opts.ready_file)?,
    ));
    let (names, dhcp_links) = start_subsystems(&opts, &handle, &ready)?;
    let mut applier = dhcp_links.applier();
    let boot_dhcp = dhcp_links.clone();
    // Its own task, so a SIGTERM does not drop the boot DHCP client before
    // it has released its lease.
    let boot = tokio::spawn(async move {
        let dhcp_links = boot_dhcp;
        boot_network(config, &handle, &opts, &names, &dhcp_links, &mut applier).await
    });
    tokio::select! {
        result = boot => match result {
            Ok(Err(e)) => Err(e),
            // The boot part never ends otherwise.
            Ok(Ok(never)) => match never {},
            Err(e) => Err(RunError::Task(e.to_string())),
        },
        _ = terminate.recv() => {
            tracing::info!("stopping: giving DHCP leases back");
            dhcp_links.stop(STOP_GRACE).await;
            Ok(())
        }
    }
}

/// Starts what runs beside the boot network and follows the published
/// config: the resource server, the mesh, the balancer, time sync and the
/// reconciler. Returns what the boot network shares with them: the names
/// (hostname, DNS) and the DHCP clients.
fn start_subsystems(
    opts: &Options,
    handle: &rtnetlink::Handle,
    ready: &ready::SharedReady,
) -> Result<(names::SharedNames, dhcp::links::DhcpLinks), RunError> {
    let time = timesync::SharedTimeStatus::default();
    let names = names::SharedNames::new(opts.resolv_conf.clone(), opts.set_hostname);
    let network_status = reconcile::SharedNetworkStatus::default();
    // The published config: parsed once per change, for every subsystem.
    let feed = feed::follow(opts.config_file.clone());
    let balancer = balancer::Balancer::new(balancer::Settings::default())?;
    let mesh = mesh::resources::SharedMesh::default();
    tokio::spawn(resources::serve(
        opts.socket.clone(),
        handle.clone(),
        opts.sysfs.clone(),
        resources::Sources {
            time: time.clone(),
            names: names.clone(),
            network: network_status.clone(),
            balancer: balancer.clone(),
            mesh: mesh.clone(),
        },
    ));
    start_mesh_and_balancer(opts, handle, &feed, mesh, balancer);
    if opts.sync_time {
        tokio::spawn(timesync::run(
            feed::derive(feed.clone(), timesync::settings_from_config),
            time,
        ));
    }
    let dhcp_links = dhcp::links::DhcpLinks::new(handle.clone(), ready.clone(), names.clone());
    tokio::spawn(reconcile::run(reconcile::Context {
        sysfs: opts.sysfs.clone(),
        network: feed::derive(feed.clone(), reconcile::settings_from_config),
        owned_file: opts.owned_file.clone(),
        ready: ready.clone(),
        names: names.clone(),
        status: network_status,
        dhcp: Some(dhcp_links.clone()),
    }));
    Ok((names, dhcp_links))
}

/// The mesh announces the control-plane nodes it learns; the balancer
/// takes them as its `discovery` endpoints.
fn start_mesh_and_balancer(
    opts: &Options,
    handle: &rtnetlink::Handle,
    feed: &feed::Feed,
    mesh: mesh::resources::SharedMesh,
    balancer: balancer::Balancer,
) {
    let (control_plane, mut learnt) = tokio::sync::watch::channel(Vec::new());
    tokio::spawn(mesh::controller::run(mesh::controller::Context {
        settings: feed::derive(feed.clone(), mesh::controller::MeshSettings::from_config),
        key_file: opts.mesh_key.clone(),
        sysfs: opts.sysfs.clone(),
        handle: handle.clone(),
        mesh,
        control_plane,
    }));
    let to_balancer = balancer.clone();
    tokio::spawn(async move {
        while learnt.changed().await.is_ok() {
            let endpoints = learnt.borrow_and_update().clone();
            to_balancer.set_endpoints("discovery", endpoints);
        }
    });
    tokio::spawn(balancer::run(
        feed::derive(feed.clone(), balancer::BalancerSettings::from_config),
        balancer,
    ));
}

/// What `ip=` asks for at boot, then nothing more for ever.
async fn boot_network(
    config: cmdline::IpConfig,
    handle: &rtnetlink::Handle,
    opts: &Options,
    names: &names::SharedNames,
    dhcp_links: &dhcp::links::DhcpLinks,
    applier: &mut ipv4_setup::Applier,
) -> Result<Infallible, RunError> {
    match config {
        cmdline::IpConfig::Off => {
            tracing::info!("no automatic configuration: loopback and the machine config only");
        }
        cmdline::IpConfig::Static(s) => {
            let link = link::wait_for(handle, s.device.as_deref(), &opts.sysfs).await?;
            link::set_up(handle, &link).await?;
            names.offer_fallback(&link.mac);
            let setup = ipv4_setup::Setup {
                source: ready::Source::Static,
                address: s.address,
                prefix_len: s.prefix_len,
                lifetime: None,
                routes: s
                    .gateway
                    .map(ipv4_setup::Route::default_via)
                    .into_iter()
                    .collect(),
                dns: s.dns,
                search: None,
                hostname: s.hostname.clone(),
                mtu: None,
                server: None,
            };
            applier.apply(&link, None, &setup).await?;
            tracing::info!("{}", setup.summary(&link.name));
        }
        cmdline::IpConfig::Dhcp { device, hostname } => {
            let link = link::wait_for(handle, device.as_deref(), &opts.sysfs).await?;
            link::set_up(handle, &link).await?;
            names.set_cmdline(names::Contribution {
                hostname: hostname.clone(),
                ..Default::default()
            });
            names.offer_fallback(&link.mac);
            // The config may ask for DHCP here too: one client is enough.
            dhcp_links.claim(&link.name);
            let (stop, _alive) = dhcp_links.stop_signal();
            dhcp::client::run(&link, applier, hostname, stop).await?;
        }
    }
    // Nothing more to do until the machine config arrives; stay alive so
    // init does not restart us in a loop.
    std::future::pending().await
}

fn create_parent(path: &Path) -> Result<(), RunError> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir).map_err(|source| RunError::CreateDir {
            path: dir.to_owned(),
            source,
        }),
        None => Ok(()),
    }
}

pub use slate_common::error::chain as error_chain;

/// The process: logging, a one-thread runtime, [`run`]. Returns on SIGTERM
/// (success) or on failure (init restarts networkd).
pub fn main() -> std::process::ExitCode {
    slate_common::logging::init();
    match run_process() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_process() -> anyhow::Result<()> {
    use anyhow::Context as _;
    let opts = Options::from_env_with(|k| std::env::var(k).ok());
    // One thread: networkd waits on a few sockets and timers, and the
    // multi-thread runtime's worker stacks would be most of its memory.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("building the tokio runtime")?;
    runtime
        .block_on(run(opts))
        .context("configuring the network")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides() {
        let env = |k: &str| match k {
            "SLATE_NETWORKD_CMDLINE" => Some("/tmp/c".to_owned()),
            "SLATE_NETWORKD_READY_FILE" => Some("/tmp/r".to_owned()),
            "SLATE_NETWORKD_SYSFS" => Some(String::new()),
            "SLATE_NETWORKD_SET_HOSTNAME" => Some("0".to_owned()),
            _ => None,
        };
        let opts = Options::from_env_with(env);
        assert_eq!(opts.cmdline, Path::new("/tmp/c"));
        assert_eq!(opts.ready_file, Path::new("/tmp/r"));
        assert_eq!(opts.sysfs, Path::new("/sys"));
        assert_eq!(opts.resolv_conf, Path::new(constants::RESOLV_CONF_FILE));
        assert!(!opts.set_hostname);
        assert_eq!(Options::from_env_with(|_| None), Options::default());
    }
}
