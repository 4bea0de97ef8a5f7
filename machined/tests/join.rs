//! Joining with a join token: a control-plane machined with a registry
//! serves its trust service on a loopback port; a machined in maintenance
//! mode registers there with only a join URL, is listed as pending, and
//! configures itself once accepted. Registrations that must not count are
//! refused and leave nothing behind.
//!
//! The registry keeps its records in `Store::memory` here (this host has
//! no etcd server); the QEMU test `qemu_join` runs it on the cluster's
//! real etcd.
// Test code outside #[test] fns: a panic here fails the test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ring::signature::KeyPair as _;
use slate_config::MachineConfig;
use slate_config::join::{JoinToken, JoinUrl};
use slate_machined::Paths;
use slate_machined::join::{Registry, Store, agent, registry};
use slate_machined::node::Node;
use slate_proto::join::join_service_client::JoinServiceClient;
use slate_proto::join::{
    AcceptMachineRequest, CreateTokenRequest, CreateTokenResponse, ForgetMachineRequest,
    ListMachinesRequest, Machine, RejectMachineRequest, RevokeTokenRequest,
};
use slate_proto::trust::trust_service_client::TrustServiceClient;
use slate_proto::trust::{RegisterRequest, RegisterResponse};
use tonic::Code;

fn cluster() -> slate_config::generate::Bundle {
    slate_config::generate::generate(&slate_config::generate::Options {
        cluster_name: "join".into(),
        endpoint: "https://10.0.0.1:6443".into(),
        ..Default::default()
    })
    .unwrap()
}

async fn machined(
    dir: &Path,
    config: Option<&MachineConfig>,
    registry: Option<Arc<Registry>>,
) -> (Paths, Arc<Node>) {
    common::machined(dir, config, None, registry).await
}

async fn join_client(paths: &Paths) -> JoinServiceClient<tonic::transport::Channel> {
    for _ in 0..100 {
        if paths.socket.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    JoinServiceClient::new(slate_client::local(&paths.socket))
}

/// A control plane: its join service, and the loopback address of its
/// trust service.
struct ControlPlane {
    _dir: tempfile::TempDir,
    config: MachineConfig,
    join: JoinServiceClient<tonic::transport::Channel>,
    trust: String,
    node: Arc<Node>,
    registry: Arc<Registry>,
}

impl ControlPlane {
    async fn start(bundle: &slate_config::generate::Bundle) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let registry = Arc::new(Registry::new(Store::memory()));
        let (paths, node) = machined(
            dir.path(),
            Some(&bundle.controlplane),
            Some(registry.clone()),
        )
        .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let trust = listener.local_addr().unwrap().to_string();
        tokio::spawn(slate_machined::trust::serve_network(
            Arc::clone(&node),
            Some(registry.clone()),
            listener,
        ));
        let join = join_client(&paths).await;
        Self {
            _dir: dir,
            config: bundle.controlplane.clone(),
            join,
            trust,
            node,
            registry,
        }
    }

    async fn token(&mut self, role: &str, auto_accept: bool, ttl: u64) -> CreateTokenResponse {
        self.join
            .create_token(CreateTokenRequest {
                role: role.into(),
                ttl_seconds: ttl,
                auto_accept,
                config_patch: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// The join URL of `token` at this control plane's loopback port.
    fn url(&self, token: &CreateTokenResponse) -> JoinUrl {
        let digest = token.join_url.rsplit_once('/').unwrap().1;
        JoinUrl::parse(
            &format!("https://{}@{}/{digest}", token.secret, self.trust),
            None,
        )
        .unwrap()
    }

    async fn machines(&mut self) -> Vec<Machine> {
        self.join
            .list_machines(ListMachinesRequest {})
            .await
            .unwrap()
            .into_inner()
            .machines
    }
}

/// One registration sent as a joining node would, with `sys` as /sys.
async fn register(
    url: &JoinUrl,
    request: RegisterRequest,
) -> Result<RegisterResponse, tonic::Status> {
    let tls = slate_pki::tls::client_ca_pinned(url.ca_sha256).unwrap();
    let target = slate_client::parse_target(&url.target).unwrap();
    let channel = slate_client::connect(&target, Arc::new(tls)).await.unwrap();
    TrustServiceClient::new(channel)
        .register(request)
        .await
        .map(tonic::Response::into_inner)
}

fn key() -> ring::signature::Ed25519KeyPair {
    let dir = tempfile::tempdir().unwrap();
    agent::node_key(&dir.path().join("key")).unwrap()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A /sys with a DMI UUID.
fn sys_with_uuid(uuid: &str) -> tempfile::TempDir {
    let sys = tempfile::tempdir().unwrap();
    let dmi = sys.path().join("class/dmi/id");
    std::fs::create_dir_all(&dmi).unwrap();
    std::fs::write(dmi.join("product_uuid"), uuid).unwrap();
    sys
}

async fn wait_for<F: AsyncFnMut() -> bool>(what: &str, mut done: F) {
    for _ in 0..300 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn a_node_with_only_a_join_token_registers_and_joins_once_accepted() {
    let bundle = cluster();
    let mut cp = ControlPlane::start(&bundle).await;
    let token = cp.token("worker", false, 3600).await;
    let info = token.token.clone().unwrap();
    assert_eq!((info.role.as_str(), info.auto_accept), ("worker", false));
    assert!(info.expires_unix > info.created_unix);
    assert!(
        token.join_url.starts_with("https://10.0.0.1:50001/sha256:"),
        "{}",
        token.join_url
    );
    assert!(token.kernel_arg.starts_with(&format!(
        "slate.join=https://{}@10.0.0.1:50001/",
        token.secret
    )));
    let listed = cp
        .join
        .list_tokens(slate_proto::join::ListTokensRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.tokens.len(), 1);
    let secret = token.secret.split_once('.').unwrap().1;
    assert!(
        !format!("{listed:?}").contains(secret),
        "a list shows no secret"
    );

    let node_dir = tempfile::tempdir().unwrap();
    let (paths, node) = machined(node_dir.path(), None, None).await;
    assert!(node.configs().await.0.is_none(), "maintenance mode");
    tokio::spawn(agent::run(
        Arc::clone(&node),
        cp.url(&token),
        paths.node_key.clone(),
    ));

    wait_for("the pending registration", async || {
        cp.machines().await.iter().any(|m| m.state == "pending")
    })
    .await;
    let machine = cp.machines().await.remove(0);
    assert_eq!(machine.token_id, info.id);
    assert_eq!(machine.source, "127.0.0.1");
    assert!(machine.memory_bytes > 0 && machine.cpus > 0, "{machine:?}");
    assert!(!machine.hostname.is_empty());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(node.configs().await.0.is_none(), "nothing before accept");

    let accepted = cp
        .join
        .accept_machine(AcceptMachineRequest {
            id: machine.id.clone(),
            role: String::new(),
            config_patch: "machine:\n  certSANs: [joined.example]\n".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(accepted.machine.unwrap().state, "accepted");
    wait_for("the node's config", async || {
        node.configs().await.0.is_some()
    })
    .await;
    let (config, _) = node.configs().await.0.unwrap();
    assert_eq!(config.machine.kind, slate_config::MachineType::Worker);
    assert!(
        config.machine.ca.key.is_none(),
        "a worker gets no machine CA key"
    );
    assert!(config.cluster.etcd.ca.is_none() && config.cluster.ca.key.is_none());
    assert_ne!(
        config.machine.token, cp.config.machine.token,
        "a joined worker gets a machine token of its own"
    );
    assert_eq!(
        config.machine.cert_sans,
        vec!["joined.example".to_owned()],
        "the accept's patch"
    );
    assert!(paths.config.exists(), "published for apid and networkd");
    wait_for("the joined state", async || {
        cp.machines().await.iter().any(|m| m.state == "joined")
    })
    .await;

    // With its own token the trust service signs the worker's registered
    // names and loopback, and nothing else: root on the worker cannot have
    // a certificate made for another node's address.
    let registered = cp.machines().await.remove(0);
    // Its token is also its kubelet's bootstrap token: the control plane
    // applies a Secret for it, right after the cluster's own.
    let kubelet_tokens = cp.registry.kubelet_tokens().await.unwrap();
    assert_eq!(
        kubelet_tokens,
        [(registered.id.clone(), config.machine.token.clone())]
    );
    let base = slate_k8s::addons::objects(&cp.config).unwrap();
    let manifests = slate_machined::kubernetes::with_worker_tokens(&base, &kubelet_tokens);
    assert_eq!(manifests.len(), base.len() + 1);
    let (id, secret) = config.machine.token.split_once('.').unwrap();
    assert_eq!(manifests[1].name, format!("bootstrap-token-{id}"));
    assert_eq!(manifests[1].body["stringData"]["token-secret"], secret);
    let allowed = cp
        .registry
        .node_names(&config.machine.token)
        .await
        .unwrap()
        .expect("the worker's token is known");
    assert!(
        registered.addresses.iter().all(|a| allowed.contains(a))
            && allowed.contains(&registered.hostname),
        "{allowed:?}"
    );
    // Both run on this host: its addresses and hostname are the control
    // plane's own too, which it never signs for others; loopback is left.
    let mut asked = allowed.clone();
    asked.extend([
        "127.0.0.1".into(),
        "10.99.0.7".into(),
        "other.example".into(),
    ]);
    let signed = certificate(&cp, &config.machine.token, &asked)
        .await
        .unwrap();
    assert_eq!(
        slate_pki::leaf::names_of(&signed.crt_pem).unwrap(),
        vec!["127.0.0.1".to_owned()]
    );
    for foreign in ["10.99.0.7", "other.example"] {
        assert!(
            signed.refused_names.contains(&foreign.to_owned()),
            "{signed:?}"
        );
    }
    let e = certificate(&cp, &JoinToken::generate().unwrap().to_string(), &asked)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // The cluster's token still signs any name but the control plane's.
    let any = certificate(&cp, &cp.config.machine.token, &asked)
        .await
        .unwrap();
    assert!(
        slate_pki::leaf::names_of(&any.crt_pem)
            .unwrap()
            .contains(&"10.99.0.7".to_owned())
    );
}

/// A server certificate from the control plane's trust service, asked
/// with `token` for `names`.
async fn certificate(
    cp: &ControlPlane,
    token: &str,
    names: &[String],
) -> Result<slate_proto::trust::CertificateResponse, tonic::Status> {
    let ca = cp.config.machine.ca.crt_pem().unwrap();
    let tls = slate_pki::tls::client(&ca, None).unwrap();
    let target = slate_client::parse_target(&cp.trust).unwrap();
    let channel = slate_client::connect(&target, Arc::new(tls)).await.unwrap();
    let key = slate_pki::ServerKey::generate().unwrap();
    let mut request = tonic::Request::new(slate_proto::trust::CertificateRequest {
        csr_pem: key.request("joined", names).unwrap(),
        names: names.to_vec(),
    });
    request.metadata_mut().insert(
        slate_common::constants::TRUST_TOKEN_HEADER,
        token.parse().unwrap(),
    );
    TrustServiceClient::new(channel)
        .certificate(request)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn an_auto_accept_token_joins_without_a_command() {
    let bundle = cluster();
    let mut cp = ControlPlane::start(&bundle).await;
    let token = cp.token("controlplane", true, 0).await;
    assert_eq!(
        token.token.as_ref().unwrap().expires_unix,
        0,
        "ttl 0: no expiry"
    );
    let node_dir = tempfile::tempdir().unwrap();
    let (paths, node) = machined(node_dir.path(), None, None).await;
    tokio::spawn(agent::run(
        Arc::clone(&node),
        cp.url(&token),
        paths.node_key.clone(),
    ));
    wait_for("the node's config", async || {
        node.configs().await.0.is_some()
    })
    .await;
    let (config, _) = node.configs().await.0.unwrap();
    assert_eq!(config.machine.kind, slate_config::MachineType::Controlplane);
    assert!(
        config.machine.ca.key.is_some(),
        "a control-plane node signs"
    );
    assert_eq!(cp.machines().await[0].state, "joined");
}

#[tokio::test]
async fn bad_registrations_are_refused_and_leave_nothing() {
    let bundle = cluster();
    let mut cp = ControlPlane::start(&bundle).await;
    let token = cp.token("worker", false, 3600).await;
    let url = cp.url(&token);
    let sys = tempfile::tempdir().unwrap();
    let k = key();

    // Forged: the right id, another secret.
    let mut forged = url.clone();
    forged.token = JoinToken::parse(&format!("{}.{}", url.token.id, "x".repeat(16))).unwrap();
    let e = register(
        &forged,
        agent::registration(&forged, &k, now_ms(), sys.path()),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    // Another cluster's token: unknown here.
    let other = JoinToken::generate().unwrap();
    let mut foreign = url.clone();
    foreign.token = other;
    let e = register(
        &foreign,
        agent::registration(&foreign, &k, now_ms(), sys.path()),
    )
    .await
    .unwrap_err();
    assert!(e.message().contains("not valid here"), "{e:?}");
    // A signature that does not hold.
    let mut tampered = agent::registration(&url, &k, now_ms(), sys.path());
    tampered.signature[0] ^= 1;
    assert_eq!(
        register(&url, tampered).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    // Expired.
    let short = cp.token("worker", false, 1).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let short_url = cp.url(&short);
    let e = register(
        &short_url,
        agent::registration(&short_url, &k, now_ms(), sys.path()),
    )
    .await
    .unwrap_err();
    assert!(e.message().contains("expired"), "{e:?}");
    // Revoked.
    let revoked = cp.token("worker", false, 3600).await;
    cp.join
        .revoke_token(RevokeTokenRequest {
            id: revoked.token.clone().unwrap().id,
        })
        .await
        .unwrap();
    let revoked_url = cp.url(&revoked);
    let e = register(
        &revoked_url,
        agent::registration(&revoked_url, &k, now_ms(), sys.path()),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(cp.machines().await.is_empty(), "nothing registered");

    // A trust service whose CA is not the pinned one: refused before
    // anything is sent.
    let mut wrong_ca = url.clone();
    wrong_ca.ca_sha256 = [7; 32];
    let tls = slate_pki::tls::client_ca_pinned(wrong_ca.ca_sha256).unwrap();
    let target = slate_client::parse_target(&wrong_ca.target).unwrap();
    assert!(slate_client::connect(&target, Arc::new(tls)).await.is_err());

    // A registration sent again is a replay. A machine is its node key:
    // another key reporting the same UUID (a clone, or someone copying a
    // victim's) is a machine of its own, which takes nothing from the
    // first.
    let uuid = "8c0a7d52-11b0-4e3a-9a4c-0123456789ab";
    let sys = sys_with_uuid(&format!("{uuid}\n"));
    let first = agent::registration(&url, &k, now_ms(), sys.path());
    let answer = register(&url, first.clone()).await.unwrap();
    assert_eq!(
        answer.machine_id,
        registry::machine_id(k.public_key().as_ref())
    );
    assert_eq!(answer.state, "pending");
    let e = register(&url, first).await.unwrap_err();
    assert!(e.message().contains("replayed"), "{e:?}");
    let copycat = register(
        &url,
        agent::registration(&url, &key(), now_ms(), sys.path()),
    )
    .await
    .unwrap();
    assert_ne!(copycat.machine_id, answer.machine_id);
    let listed = cp.machines().await;
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|m| m.uuid == uuid), "{listed:?}");
    cp.join
        .forget_machine(ForgetMachineRequest {
            id: copycat.machine_id.clone(),
        })
        .await
        .unwrap();

    // Rejected: told so; forgotten: free to register with a new key.
    cp.join
        .reject_machine(RejectMachineRequest {
            id: answer.machine_id.clone(),
        })
        .await
        .unwrap();
    let told = register(
        &url,
        agent::registration(&url, &k, now_ms() + 10, sys.path()),
    )
    .await
    .unwrap();
    assert_eq!(
        (told.state.as_str(), told.config.is_empty()),
        ("rejected", true)
    );
    let e = cp
        .join
        .accept_machine(AcceptMachineRequest {
            id: answer.machine_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    cp.join
        .forget_machine(ForgetMachineRequest {
            id: answer.machine_id.clone(),
        })
        .await
        .unwrap();
    let again = register(
        &url,
        agent::registration(&url, &k, now_ms() + 20, sys.path()),
    )
    .await
    .unwrap();
    assert_eq!(again.state, "pending", "forgotten, then registered anew");
}

/// The token is checked when a machine first registers; a machine that
/// waits past its token's expiry or revocation is still accepted and
/// joins, proving itself by its node key. A token has a bounded number
/// of machines waiting.
#[tokio::test]
async fn a_waiting_machine_outlives_its_token_and_tokens_have_room_for_few() {
    let bundle = cluster();
    let mut cp = ControlPlane::start(&bundle).await;
    let short = cp.token("worker", false, 1).await;
    let url = cp.url(&short);
    let revoked = cp.token("worker", false, 3600).await;
    let revoked_url = cp.url(&revoked);
    let sys = tempfile::tempdir().unwrap();
    let (a, b) = (key(), key());
    let first = register(&url, agent::registration(&url, &a, now_ms(), sys.path()))
        .await
        .unwrap();
    let second = register(
        &revoked_url,
        agent::registration(&revoked_url, &b, now_ms(), sys.path()),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    cp.join
        .revoke_token(RevokeTokenRequest {
            id: revoked.token.clone().unwrap().id,
        })
        .await
        .unwrap();
    for (id, url, k) in [
        (&first.machine_id, &url, &a),
        (&second.machine_id, &revoked_url, &b),
    ] {
        cp.join
            .accept_machine(AcceptMachineRequest {
                id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        let joined = register(url, agent::registration(url, k, now_ms() + 100, sys.path()))
            .await
            .unwrap();
        assert_eq!(joined.state, "joined");
        assert!(!joined.config.is_empty());
    }

    let roomy = cp.token("worker", false, 3600).await;
    let roomy_url = cp.url(&roomy);
    for _ in 0..registry::MAX_PENDING_PER_TOKEN {
        register(
            &roomy_url,
            agent::registration(&roomy_url, &key(), now_ms(), sys.path()),
        )
        .await
        .unwrap();
    }
    let e = register(
        &roomy_url,
        agent::registration(&roomy_url, &key(), now_ms(), sys.path()),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
}

#[tokio::test]
async fn bad_tokens_and_patches_are_refused_when_made() {
    let bundle = cluster();
    let mut cp = ControlPlane::start(&bundle).await;
    let e = cp
        .join
        .create_token(CreateTokenRequest {
            role: "boss".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("worker or controlplane"), "{e:?}");
    let e = cp
        .join
        .create_token(CreateTokenRequest {
            role: "worker".into(),
            config_patch: "machine:\n  nosuchfield: 1\n".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("nosuchfield"), "{e:?}");
    let e = cp
        .join
        .revoke_token(RevokeTokenRequest {
            id: "nope00".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(
        cp.join
            .list_tokens(slate_proto::join::ListTokensRequest {})
            .await
            .unwrap()
            .into_inner()
            .tokens
            .is_empty()
    );
}

/// A control plane that is down when the node starts (or restarts while
/// it waits): the node keeps asking and registers once it answers.
#[tokio::test]
async fn a_node_registers_once_the_control_plane_is_back() {
    let bundle = cluster();
    let mut cp = ControlPlane::start(&bundle).await;
    let token = cp.token("worker", false, 3600).await;
    // A port nobody serves yet.
    let parked = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = parked.local_addr().unwrap().port();
    drop(parked);
    let mut url = cp.url(&token);
    url.target = format!("127.0.0.1:{port}");
    let node_dir = tempfile::tempdir().unwrap();
    let (paths, node) = machined(node_dir.path(), None, None).await;
    tokio::spawn(agent::run(Arc::clone(&node), url, paths.node_key.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(cp.machines().await.is_empty());
    // The control plane comes back on that port.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(slate_machined::trust::serve_network(
        Arc::clone(&cp.node),
        Some(cp.registry.clone()),
        listener,
    ));
    wait_for("the registration after the outage", async || {
        cp.machines().await.iter().any(|m| m.state == "pending")
    })
    .await;
}
