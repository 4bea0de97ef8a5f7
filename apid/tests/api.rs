//! apid end to end on loopback: a real TLS listener, real certificates,
//! real gRPC clients.

use std::sync::Arc;

use slate_machinery::client::{self, Target};
use slate_machinery::generate::{self, Options};
use slate_machinery::pki::{Authority, Role};
use slate_machinery::tls;
use slate_proto::machine::{ProcessesRequest, VersionRequest};

struct Node {
    _dir: tempfile::TempDir,
    target: Target,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Starts apid on a free loopback port with `config` (a machine config
/// as machined publishes it, JSON) or, when `None`, with a config error, i.e. in safe mode.
async fn start(config: Option<&str>) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let paths = slate_apid::Paths {
        config: dir.path().join("config.json"),
        config_error: dir.path().join("config.error"),
        network_ready: dir.path().join("network.ready"),
    };
    std::fs::write(&paths.network_ready, "lo 127.0.0.1/8 static\n").unwrap();
    match config {
        Some(text) => std::fs::write(&paths.config, text).unwrap(),
        None => std::fs::write(
            &paths.config_error,
            "invalid machine config: user-data: line 3, column 1: bad\n",
        )
        .unwrap(),
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = Target::parse(&listener.local_addr().unwrap().to_string()).unwrap();
    let server = tokio::spawn(slate_apid::serve(paths, listener));
    Node {
        _dir: dir,
        target,
        server,
    }
}

fn cluster() -> generate::Bundle {
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

fn machine_ca(bundle: &generate::Bundle) -> (String, String) {
    let ca = &bundle.controlplane.machine.ca;
    (ca.crt_pem().unwrap(), ca.key_pem().unwrap().unwrap())
}

/// True when `tls` cannot get a `Version` answer: refused in the handshake
/// (TLS 1.3 may report that only on the first request) or by the call.
async fn refused(target: &Target, tls: Arc<rustls::ClientConfig>) -> bool {
    match client::connect(target, tls).await {
        Err(_) => true,
        Ok(channel) => client::machine(channel)
            .version(VersionRequest {})
            .await
            .is_err(),
    }
}

/// The admin identity that `gen config` wrote into the client config.
fn admin_tls(bundle: &generate::Bundle) -> Arc<rustls::ClientConfig> {
    let ctx = &bundle.client.contexts["test"];
    Arc::new(tls::client(&ctx.ca_pem().unwrap(), Some(&ctx.identity().unwrap())).unwrap())
}

fn client_tls(ca_pem: &str, authority: &Authority, role: Role) -> Arc<rustls::ClientConfig> {
    let id = authority.issue_client("tester", role).unwrap();
    Arc::new(tls::client(ca_pem, Some(&id)).unwrap())
}

#[tokio::test]
async fn admin_gets_version_over_mutual_tls() {
    let bundle = cluster();
    let node = start(Some(&bundle.controlplane.to_json().unwrap())).await;
    let channel = client::connect(&node.target, admin_tls(&bundle))
        .await
        .unwrap();
    let v = client::machine(channel)
        .version(VersionRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.tag, env!("CARGO_PKG_VERSION"));
    assert!(!v.kernel.is_empty() && !v.hostname.is_empty() && !v.arch.is_empty());
    assert!(v.uptime_ms > 0 && v.boot_time_unix > 1_500_000_000);
    assert!(!v.safe_mode);
}

#[tokio::test]
async fn reflection_lists_the_machine_service() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let bundle = cluster();
    let node = start(Some(&bundle.controlplane.to_json().unwrap())).await;
    let channel = client::connect(&node.target, admin_tls(&bundle))
        .await
        .unwrap();
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply {reply:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"slate.machine.v1.MachineService"),
        "{names:?}"
    );
}

#[tokio::test]
async fn every_role_may_read_and_version() {
    let bundle = cluster();
    let node = start(Some(&bundle.worker.to_json().unwrap())).await;
    let (ca, key) = machine_ca(&bundle);
    let authority = Authority::from_pem(&ca, &key).unwrap();
    for role in Role::ALL {
        let channel = client::connect(&node.target, client_tls(&ca, &authority, role))
            .await
            .unwrap();
        let mut api = client::machine(channel);
        api.version(VersionRequest {})
            .await
            .unwrap_or_else(|e| panic!("{role}: {e}"));
        let procs = api
            .processes(ProcessesRequest {})
            .await
            .unwrap()
            .into_inner()
            .processes;
        assert!(
            procs.iter().any(|p| p.pid == std::process::id() as i32),
            "{role}: own process listed"
        );
    }
}

#[tokio::test]
async fn client_from_another_ca_is_refused() {
    let bundle = cluster();
    let node = start(Some(&bundle.controlplane.to_json().unwrap())).await;
    let (ca, _) = machine_ca(&bundle);
    // The client trusts the node's CA but holds a certificate of a different CA.
    let other = cluster();
    let (other_ca, other_key) = machine_ca(&other);
    let foreign = client_tls(
        &ca,
        &Authority::from_pem(&other_ca, &other_key).unwrap(),
        Role::Admin,
    );
    assert!(
        refused(&node.target, foreign).await,
        "a certificate from another CA must be refused"
    );

    // No client certificate at all.
    let anonymous = Arc::new(tls::client(&ca, None).unwrap());
    assert!(
        refused(&node.target, anonymous).await,
        "a client without a certificate must be refused"
    );

    // And an insecure client (no certificate) likewise.
    let insecure = Arc::new(tls::client_insecure().unwrap());
    assert!(
        refused(&node.target, insecure).await,
        "an insecure client must be refused when the node has a config"
    );
}

#[tokio::test]
async fn the_client_refuses_a_node_of_another_ca() {
    let node_bundle = cluster();
    let node = start(Some(&node_bundle.controlplane.to_json().unwrap())).await;
    let tls = admin_tls(&cluster());
    // The client's own CA did not issue the node's certificate.
    assert!(
        refused(&node.target, tls).await,
        "the client must not trust a node of another CA"
    );
}

#[tokio::test]
async fn safe_mode_answers_version_only() {
    let node = start(None).await;
    let insecure = Arc::new(tls::client_insecure().unwrap());
    let channel = client::connect(&node.target, insecure).await.unwrap();
    let mut api = client::machine(channel);
    let v = api.version(VersionRequest {}).await.unwrap().into_inner();
    assert!(v.safe_mode);
    assert!(
        v.safe_mode_reason.contains("line 3"),
        "{}",
        v.safe_mode_reason
    );
    let err = api.processes(ProcessesRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
}
