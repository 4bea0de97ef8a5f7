//! machined owns the machine config.
//!
//! # Boot flow
//! 1. Find the config, in order: the STATE volume ([`disk`], [`state`]),
//!    `slate.config=URL` on the kernel command line ([`url`]), a nocloud
//!    config drive (a block device labelled `cidata` whose `user-data` is
//!    the config, [`configdrive`]); else the node is in maintenance mode.
//! 2. Publish the verdict ([`publish`]): a valid config to
//!    `/run/slate/machine-config.json` for networkd (root only) and its
//!    secret-free view to `/run/slate/api-view.json` for apid; otherwise one
//!    line naming the source, line and error to the console and to
//!    `/run/slate/machine-config.error`, and apid serves in maintenance mode.
//! 3. Serve the machine service's changing calls on
//!    `/run/slate/machined.sock` ([`api`]): apply-config with its modes
//!    ([`node`]), the running config, reboot and shutdown ([`power`]);
//!    and the trust service ([`trust`]): apid's certificate and client
//!    configurations, signed with the machine CA key that only machined
//!    reads.
//!
//! machined never exits on bad input: init would restart it forever.
//!
//! 4. Supervise the node's services ([`services`]): start, restart,
//!    health, logs; stop them all on SIGTERM (init's shutdown).
//!
//! # Limitations
//! Only containerd runs as a service yet (when the image's extension layer
//! has it); etcd and kubelet need their configuration written first.

pub mod api;
pub mod blockdev;
pub mod configdrive;
pub mod containers;
pub mod disk;
pub mod etcd;
pub mod images;
pub mod install;
pub mod join;
pub mod kmsg;
pub mod kubernetes;
pub mod node;
pub mod node_ip;
pub mod power;
pub mod publish;
pub mod services;
pub mod state;
pub mod trial;
pub mod trust;
pub mod url;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use slate_common::constants;
use slate_config::MachineConfig;
use slate_proto::join::join_service_server::JoinServiceServer;
use slate_proto::machine::machine_service_server::MachineServiceServer;
use slate_proto::trust::trust_service_server::TrustServiceServer;

use crate::node::{Node, Source, Storage};
use crate::power::Power;
use crate::publish::Verdict;
use crate::services::Supervisor;

/// Where machined publishes its verdict and serves its socket.
#[derive(Debug, Clone)]
pub struct Paths {
    pub config: PathBuf,
    /// apid's view of the config (`slate_config::ApiView`).
    pub api_view: PathBuf,
    /// Where a node without the machine CA key has apid's certificate
    /// signed (`HOST:PORT`); `None`: the control-plane endpoint's host on
    /// `constants::TRUST_PORT`. Tests point it at a loopback port.
    pub trust_remote: Option<String>,
    pub config_error: PathBuf,
    /// Where the config drive is mounted while it is read.
    pub mount_point: PathBuf,
    pub socket: PathBuf,
    /// A `try` in progress ([`trial`]).
    pub try_record: PathBuf,
    /// The node key of a joining node ([`join::agent`]).
    pub node_key: PathBuf,
}

impl Paths {
    /// Every path inside `dir`: for tests, which must not touch /run.
    pub fn under(dir: &std::path::Path) -> Self {
        Self {
            config: dir.join("config.json"),
            api_view: dir.join("api-view.json"),
            trust_remote: None,
            config_error: dir.join("config.error"),
            mount_point: dir.join("cidata"),
            socket: dir.join("machined.sock"),
            try_record: dir.join("try.json"),
            node_key: dir.join("node-key.pk8"),
        }
    }
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            config: PathBuf::from(constants::MACHINE_CONFIG_FILE),
            api_view: PathBuf::from(constants::API_VIEW_FILE),
            trust_remote: None,
            config_error: PathBuf::from(constants::MACHINE_CONFIG_ERROR_FILE),
            mount_point: PathBuf::from(constants::RUN_DIR).join("cidata"),
            socket: PathBuf::from(constants::MACHINED_SOCKET),
            try_record: PathBuf::from(constants::RUN_DIR).join("machined-try.json"),
            node_key: PathBuf::from(constants::RUN_DIR).join("node-key.pk8"),
        }
    }
}

/// The process: logging, then [`run`], which never returns.
pub fn main() -> std::process::ExitCode {
    slate_common::logging::init();
    run(&Paths::default())
}

/// Loads and publishes the config, then serves the socket forever.
pub fn run(paths: &Paths) -> ! {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => {
            let mount_point = PathBuf::from(constants::STATE_MOUNT);
            // Before STATE is looked for: a reset's wipe runs here.
            let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
            let on_disk = install::at_boot(&cmdline);
            let state_device = disk::find_state();
            let state = match state_device.as_deref() {
                None => Ok(None),
                // Mounted already when init restarted machined.
                Some(_) if disk::is_mounted(&mount_point) => {
                    Ok(Some(state::State::new(&mount_point)))
                }
                Some(device) => match disk::mount_state(device, &mount_point) {
                    Ok(()) => Ok(Some(state::State::new(&mount_point))),
                    Err(e) => Err(format!("{:#}", anyhow::Error::from(e))),
                },
            };
            let storage = Storage::Disks { mount_point };
            let node = runtime.block_on(boot(paths, storage, state, Power::Init));
            // The socket first: apid waits on it for its certificate, and
            // /var and the services below take a few hundred ms. Services
            // show up in the API as they are added.
            let services = Supervisor::new(
                PathBuf::from(constants::SERVICES_CGROUP),
                Some(PathBuf::from(constants::SERVICE_LOG_DIR)),
            );
            let (config, etcd, registry, server) = runtime.block_on(async {
                tokio::spawn(stop_services_on_sigterm(services.clone()));
                let config = node.configs().await.0.map(|(config, _)| config);
                let bin = std::path::Path::new(services::layer::EXTENSIONS_BIN);
                let etcd = config.as_ref().and_then(|c| {
                    etcd::Etcd::for_node(c, &bin.join("etcd"), etcd::EtcdPaths::default())
                });
                let registry = etcd
                    .clone()
                    .map(|e| Arc::new(join::Registry::new(join::Store::etcd(e))));
                let served = Served {
                    node: Arc::clone(&node),
                    services: services.clone(),
                    etcd: etcd.clone(),
                    registry: registry.clone(),
                };
                let socket_paths = paths.clone();
                let server = tokio::spawn(async move { serve(&socket_paths, served).await });
                // Bound before the blocking mounts below.
                tokio::task::yield_now().await;
                (config, etcd, registry, server)
            });
            // Before any service writes to /var. A first boot from a config
            // drive has just made STATE and EPHEMERAL: use them at once.
            mount_var(state_device.or_else(disk::find_state).as_deref());
            runtime.block_on(async {
                // Whatever apid asked meanwhile is answered before the
                // services' start-up takes the runtime.
                tokio::task::yield_now().await;
                let bin = std::path::Path::new(services::layer::EXTENSIONS_BIN);
                let specs = services::catalog::specs(bin, config.as_ref(), etcd.as_ref());
                // A control-plane node whose kubelet runs keeps the
                // control plane's secrets fresh and applies its manifests.
                if let Some(config) = &config
                    && kubernetes::runs_control_plane(config)
                    && specs.iter().any(|s| s.id == "kubelet")
                {
                    tokio::spawn(kubernetes::run(
                        config.clone(),
                        slate_k8s::layout::Layout::default(),
                        constants::NETWORK_READY_FILE.into(),
                        registry.clone(),
                    ));
                }
                // Image archives of the layer go into containerd before
                // kubelet starts (kubelet's preparation waits for them).
                if specs.iter().any(|s| s.id == "containerd") {
                    tokio::spawn(images::import_all(
                        bin.join("ctr"),
                        images::ARCHIVES.into(),
                        services::layer::CONTAINERD_SOCKET.into(),
                        images::IMPORTED.into(),
                    ));
                }
                if specs.is_empty() {
                    tracing::info!("no extension layer on /usr/local: no services to run");
                }
                for spec in specs {
                    if let Err(e) = services.add(spec) {
                        tracing::error!("{e}");
                    }
                }
            });
            if let Some((system, Some(slot))) = on_disk {
                runtime.spawn(install::rpc::gate(
                    system,
                    slot,
                    Arc::clone(&node),
                    services.clone(),
                    etcd.clone(),
                    node.power().clone(),
                ));
            }
            runtime.spawn(trust::run_network(
                Arc::clone(&node),
                registry,
                paths.config.clone(),
            ));
            let failed = match runtime.block_on(server) {
                Ok(Ok(())) => anyhow::anyhow!("machined's socket server stopped"),
                Ok(Err(e)) => e,
                Err(e) => anyhow::anyhow!("machined's socket server: {e}"),
            };
            // Without its socket machined is deaf: apid cannot apply,
            // reboot or read logs. Exit, and init starts a new one (a
            // socket it can bind, the running config kept: `boot`).
            tracing::error!("{failed:#}; exiting for init to restart machined");
            slate_common::logging::flush();
            std::process::exit(1);
        }
        Err(e) => tracing::error!("starting the runtime: {e}"),
    }
    // Without a runtime, exiting would only make init restart us into the
    // same failure.
    loop {
        nix::unistd::pause();
    }
}

/// Puts EPHEMERAL on /var if the system disk has one (and it is not there
/// already: machined restarted); else says that /var is the boot's tmpfs.
fn mount_var(state: Option<&std::path::Path>) {
    let var = std::path::Path::new(constants::VAR_DIR);
    if var_fstype().as_deref() == Some("ext4") {
        return;
    }
    match state.and_then(disk::find_ephemeral) {
        Some(device) => match disk::mount_ephemeral(&device, var) {
            Ok(()) => tracing::info!("EPHEMERAL ({}) mounted on /var", device.display()),
            Err(e) => tracing::error!(
                "{:#}; /var stays a tmpfs: containerd, etcd and logs do not survive a reboot",
                anyhow::Error::from(e)
            ),
        },
        None => tracing::warn!(
            "no EPHEMERAL partition: /var is a tmpfs (containerd, etcd and logs do not survive a reboot)"
        ),
    }
}

/// The filesystem type of the last mount on /var.
fn var_fstype() -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().rev().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, target, fstype) = (f.next()?, f.next()?, f.next()?);
        (target == constants::VAR_DIR).then(|| fstype.to_owned())
    })
}

/// Finds the config (STATE, then `slate.config=URL`, then the config
/// drive) and publishes it. `state` is the STATE volume, or why the one
/// the disk has did not mount.
pub async fn boot(
    paths: &Paths,
    storage: Storage,
    state: Result<Option<state::State>, String>,
    power: Power,
) -> Arc<Node> {
    // machined restarted by init (the published files are on tmpfs, so
    // they exist only within this boot): carry on with the running config,
    // which may be a `try`, not with what STATE holds for the next boot.
    if let Ok(text) = std::fs::read_to_string(&paths.config)
        && let Ok(config) = MachineConfig::from_json(&text, "published config")
    {
        let node = Node::new(paths.clone(), storage, state.ok().flatten(), power);
        tracing::info!("machined restarted: keeping the running config");
        node.boot(Verdict::valid(config), Source::Published).await;
        node.resume_try().await;
        return node;
    }
    let state = match state {
        Ok(state) => state,
        Err(why) => {
            let node = Node::new(paths.clone(), storage, None, power);
            node.boot(Verdict::Refused(why), Source::State).await;
            return node;
        }
    };
    if let Some(s) = &state {
        match s.promote_staged() {
            Ok(true) => tracing::info!("the staged config is now the node's config"),
            Ok(false) => {}
            Err(e) => tracing::error!("promoting the staged config: {:#}", anyhow::Error::from(e)),
        }
    }
    let stored = state.as_ref().and_then(state::State::load);
    let holds_config = stored.is_none() && state.as_ref().is_some_and(state::State::holds_config);
    let node = Node::new(paths.clone(), storage, state, power);
    if let Some(config) = stored {
        tracing::info!("machine config from STATE");
        node.boot(Verdict::valid(config), Source::State).await;
        return node;
    }
    // Not a blank node: falling through to the config drive or to
    // maintenance mode would let anyone who reaches it take it over.
    if holds_config {
        let why = "STATE holds a machine config, and neither config.yaml nor \
                   config.prev.yaml loads"
            .to_owned();
        node.boot(Verdict::Refused(why), Source::State).await;
        return node;
    }
    let cmdline = std::fs::read_to_string(constants::PROC_CMDLINE).unwrap_or_default();
    if let Some(url) = url::from_cmdline(&cmdline) {
        // The first attempt without an address could only fail.
        let network = std::path::Path::new(constants::NETWORK_READY_FILE);
        if !slate_common::fs::wait_for_file(network, std::time::Duration::from_secs(30)).await {
            tracing::warn!("no network address after 30 s; fetching anyway");
        }
        tracing::info!("fetching the machine config from {}", url::redacted(&url));
        let shown = url::redacted(&url);
        let verdict = match url::fetch_with_retries(&url).await {
            Ok(body) => {
                match MachineConfig::parse_bytes(&body, &shown, slate_config::Mode::Cloud) {
                    Ok(config) => Verdict::valid(config),
                    Err(e) => Verdict::Invalid(e.to_string()),
                }
            }
            Err(e) => Verdict::Unreadable(format!(
                "slate.config={shown}: {:#}",
                anyhow::Error::from(e)
            )),
        };
        node.boot(verdict, Source::Url).await;
        return node;
    }
    tracing::debug!("looking for the config drive");
    let mount_point = paths.mount_point.clone();
    let found =
        tokio::task::spawn_blocking(move || configdrive::read_user_data(&mount_point)).await;
    let mut join = slate_config::join::JoinUrl::from_cmdline(&cmdline);
    let verdict = match found {
        // The same join document as on the kernel command line, from a
        // config drive or cloud user-data: one generic image joins by its
        // metadata alone.
        Ok(Ok(Some(found))) if found.text.trim_start().starts_with("slate.join=") => {
            join = slate_config::join::JoinUrl::from_cmdline(&found.text);
            Verdict::Missing
        }
        Ok(Ok(Some(found))) => Verdict::from_user_data(&found),
        Ok(Ok(None)) => Verdict::Missing,
        Ok(Err(e)) => Verdict::Unreadable(format!("{:#}", anyhow::Error::from(e))),
        Err(e) => Verdict::Unreadable(format!("reading the config drive: {e}")),
    };
    let missing = matches!(verdict, Verdict::Missing);
    node.boot(verdict, Source::ConfigDrive).await;
    match join {
        Some(Ok(url)) if missing => {
            tokio::spawn(join::agent::run(
                Arc::clone(&node),
                url,
                paths.node_key.clone(),
            ));
        }
        Some(Ok(_)) => tracing::warn!("slate.join= is ignored: the config drive has a config"),
        Some(Err(e)) => tracing::error!("{e}; the node waits in maintenance mode"),
        None => {}
    }
    node
}

/// How long the services get to stop when init stops machined (init's own
/// grace is 10 s before SIGKILL).
const SERVICES_STOP: std::time::Duration = std::time::Duration::from_secs(8);

/// On SIGTERM (init's shutdown): stop every service, then exit.
async fn stop_services_on_sigterm(services: Supervisor) {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        tracing::error!("cannot handle SIGTERM: services will be killed at shutdown");
        return;
    };
    term.recv().await;
    tracing::info!("stopping the services");
    services.stop_all(SERVICES_STOP).await;
    slate_common::logging::flush();
    std::process::exit(0);
}

/// What machined's socket serves.
pub struct Served {
    pub node: Arc<Node>,
    pub services: Supervisor,
    pub etcd: Option<Arc<etcd::Etcd>>,
    /// Join tokens and registrations: on control-plane nodes with etcd.
    pub registry: Option<Arc<join::Registry>>,
}

impl Served {
    /// A node without etcd (a worker, or a test).
    pub fn new(node: Arc<Node>, services: Supervisor) -> Self {
        Self {
            node,
            services,
            etcd: None,
            registry: None,
        }
    }
}

/// Serves machined's socket.
pub async fn serve(paths: &Paths, served: Served) -> anyhow::Result<()> {
    let Served {
        node,
        services,
        etcd,
        registry,
    } = served;
    use std::os::unix::fs::PermissionsExt as _;
    // A socket left by an earlier machined would make bind fail.
    let _ = std::fs::remove_file(&paths.socket);
    let listener = tokio::net::UnixListener::bind(&paths.socket)
        .with_context(|| format!("listening on {}", paths.socket.display()))?;
    // Root and apid's group (the directory's, see init): apid forwards
    // the callers it authorized and asks for its certificate here.
    std::fs::set_permissions(&paths.socket, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("restricting {}", paths.socket.display()))?;
    tonic::transport::Server::builder()
        .add_service(TrustServiceServer::new(trust::Local::new(
            Arc::clone(&node),
            paths.trust_remote.clone(),
        )))
        .add_service(JoinServiceServer::new(join::api::JoinApi::new(
            Arc::clone(&node),
            registry,
        )))
        .add_service(MachineServiceServer::new(api::MachinedApi::new(
            node, services, etcd,
        )))
        .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
        .await
        .context("serving machined's socket")
}
