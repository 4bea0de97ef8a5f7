//! What the apid end-to-end tests share: a node (apid and machined on
//! loopback, in a temporary directory), the cluster's certificates and
//! clients for each role.
#![allow(dead_code, unused_imports)]
// each test file uses part of it
// Test helpers outside #[test] fns: a panic here fails the test that called it.
#![allow(clippy::unwrap_used)]

pub use std::sync::Arc;

pub use slate_client::{self as client, Target};
pub use slate_config::MachineConfig;
pub use slate_config::generate::{self, Options};
pub use slate_machined::node::{Source, Storage};
pub use slate_machined::power::{Action, Power};
pub use slate_machined::publish::Verdict;
pub use slate_machined::state::State;
pub use slate_pki::tls;
pub use slate_pki::{Authority, Role};
pub use slate_proto::machine::{
    ApplyConfigurationRequest, ApplyMode, GetMachineConfigRequest, ProcessesRequest, VersionRequest,
};

pub struct Node {
    pub dir: tempfile::TempDir,
    pub target: Target,
    pub servers: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// Reboots and power-offs machined asked for (never the host's init).
    pub power: Arc<std::sync::Mutex<Vec<Action>>>,
    /// The services' cgroup root, removed with the node.
    pub cgroups: std::path::PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        for s in &self.servers {
            s.abort();
        }
        slate_machined::services::cgroup::remove_tree(&self.cgroups);
    }
}

/// The one service every test node runs: it talks, so logs have lines.
pub const TALKER: &str = "echo hello from talker; while true; do sleep 0.2; echo tick; done";

/// A supervisor with [`TALKER`], its cgroups under the cgroup2 mount (or,
/// without one, a directory where spawning fails: the calls still work).
pub fn services(
    dir: &std::path::Path,
) -> (slate_machined::services::Supervisor, std::path::PathBuf) {
    use slate_machined::services::{ServiceSpec, Supervisor, cgroup};
    static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let root = cgroup::cgroup2_mount()
        .map(|m| m.join(format!("slate-apid-test-{}-{n}", std::process::id())))
        .unwrap_or_else(|| dir.join("cgroups"));
    let sup = Supervisor::new(root.clone(), None);
    sup.add(ServiceSpec::new("talker", &["/bin/sh", "-c", TALKER]))
        .unwrap();
    (sup, root)
}

/// How the node starts.
pub enum Boot<'a> {
    /// With this config on its STATE volume.
    Configured(&'a MachineConfig),
    /// With no config at all: maintenance mode.
    Empty,
    /// With a config drive whose config is broken (the reason).
    Invalid(&'a str),
}

/// Starts machined (on a Unix socket, with a STATE directory) and apid on a
/// free loopback port, as on a node.
pub async fn start(boot: Boot<'_>) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    let machined_paths = slate_machined::Paths::under(dir.path());
    let paths = slate_apid::Paths {
        api_view: machined_paths.api_view.clone(),
        config_error: machined_paths.config_error.clone(),
        network_ready: dir.path().join("network.ready"),
        machined_socket: machined_paths.socket.clone(),
        networkd_socket: dir.path().join("networkd.sock"),
    };
    std::fs::write(&paths.network_ready, "lo 127.0.0.1/8 static\n").unwrap();
    let state = State::new(&state_dir);
    let power = Arc::new(std::sync::Mutex::new(Vec::new()));
    let node = slate_machined::node::Node::new(
        machined_paths.clone(),
        Storage::Fixed(Some(state.clone())),
        None,
        Power::Record(Arc::clone(&power)),
    );
    match boot {
        Boot::Configured(config) => {
            state.save(config).unwrap();
            node.boot(Verdict::valid(state.load().unwrap()), Source::State)
                .await
        }
        Boot::Empty => node.boot(Verdict::Missing, Source::ConfigDrive).await,
        Boot::Invalid(reason) => {
            node.boot(Verdict::Invalid(reason.into()), Source::ConfigDrive)
                .await
        }
    }
    let (supervisor, cgroups) = services(dir.path());
    let machined = tokio::spawn(async move {
        slate_machined::serve(
            &machined_paths,
            slate_machined::Served::new(node, supervisor),
        )
        .await
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = slate_client::parse_target(&listener.local_addr().unwrap().to_string()).unwrap();
    let apid = tokio::spawn(slate_apid::serve(paths, listener));
    Node {
        dir,
        target,
        servers: vec![machined, apid],
        power,
        cgroups,
    }
}

pub fn cluster() -> generate::Bundle {
    generate::generate(&Options {
        cluster_name: "test".into(),
        endpoint: "https://127.0.0.1:6443".into(),
        additional_sans: vec![],
        client_endpoints: vec!["127.0.0.1".into()],
        install_disk: None,
        secrets: None,
    })
    .unwrap()
}

pub fn machine_ca(bundle: &generate::Bundle) -> (String, String) {
    let ca = &bundle.controlplane.machine.ca;
    (ca.crt_pem().unwrap(), ca.key_pem().unwrap().unwrap())
}

/// True when `tls` cannot get a `Version` answer: refused in the handshake
/// (TLS 1.3 may report that only on the first request) or by the call.
pub async fn refused(target: &Target, tls: Arc<rustls::ClientConfig>) -> bool {
    match client::connect(target, tls).await {
        Err(_) => true,
        Ok(channel) => client::machine(channel)
            .version(VersionRequest {})
            .await
            .is_err(),
    }
}

/// The admin identity that `gen config` wrote into the client config.
pub fn admin_tls(bundle: &generate::Bundle) -> Arc<rustls::ClientConfig> {
    let ctx = &bundle.client.contexts["test"];
    Arc::new(tls::client(&ctx.ca_pem().unwrap(), Some(&ctx.identity().unwrap())).unwrap())
}

pub fn client_tls(ca_pem: &str, authority: &Authority, role: Role) -> Arc<rustls::ClientConfig> {
    let id = authority.issue_client("tester", role).unwrap();
    Arc::new(tls::client(ca_pem, Some(&id)).unwrap())
}

pub fn insecure() -> Arc<rustls::ClientConfig> {
    Arc::new(tls::client_insecure().unwrap())
}

pub async fn api(
    target: &Target,
    tls: Arc<rustls::ClientConfig>,
) -> slate_proto::machine::machine_service_client::MachineServiceClient<tonic::transport::Channel> {
    client::machine(client::connect(target, tls).await.unwrap())
}

pub fn apply(config: &MachineConfig, mode: ApplyMode) -> ApplyConfigurationRequest {
    ApplyConfigurationRequest {
        data: config.to_yaml().unwrap().into_bytes(),
        mode: mode as i32,
        dry_run: false,
        try_timeout_seconds: 0,
    }
}

/// Polls until `check` holds (apid follows machined's files with inotify;
/// machined and the supervisor take their time).
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..40 {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{what}: not within 4 s");
}
