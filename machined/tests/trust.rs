//! The trust service on machined's socket: apid's certificate is signed
//! here, with the machine CA key apid never reads, and only for the
//! node's own names; client configurations are minted here too.
// Test code outside #[test] fns: a panic here fails the test.
#![allow(clippy::unwrap_used)]

mod common;

use slate_machined::Paths;
use slate_pki::ServerKey;
use slate_proto::machine::GenerateClientConfigurationRequest;
use slate_proto::trust::CertificateRequest;
use slate_proto::trust::trust_service_client::TrustServiceClient;

fn cluster() -> slate_config::generate::Bundle {
    slate_config::generate::generate(&slate_config::generate::Options {
        cluster_name: "trust".into(),
        endpoint: "https://10.0.0.1:6443".into(),
        additional_sans: vec!["api.example".into()],
        ..Default::default()
    })
    .unwrap()
}

/// machined in `dir`, configured with `config` (by default the
/// control-plane config of [`cluster`], whose certSANs name
/// `api.example`), or in maintenance mode. `remote`: where it sends
/// requests it cannot sign.
async fn machined_with(
    dir: &std::path::Path,
    config: Option<&slate_config::MachineConfig>,
    remote: Option<String>,
) -> (Paths, std::sync::Arc<slate_machined::node::Node>) {
    common::machined(dir, config, remote, None).await
}

async fn machined(
    dir: &std::path::Path,
    configured: bool,
) -> (Paths, slate_config::generate::Bundle) {
    let bundle = cluster();
    let config = configured.then_some(&bundle.controlplane);
    let (paths, _) = machined_with(dir, config, None).await;
    (paths, bundle)
}

#[tokio::test]
async fn apid_s_certificate_is_signed_for_the_node_s_names_only() {
    let dir = tempfile::tempdir().unwrap();
    let (paths, bundle) = machined(dir.path(), true).await;
    let mut trust = TrustServiceClient::new(slate_client::local(&paths.socket));
    let key = ServerKey::generate().unwrap();
    // What a compromised apid would ask for: another node's address and a
    // name that is not this node's, beside the node's own.
    let hostname = slate_common::host::hostname();
    let asked: Vec<String> = [
        &hostname,
        "127.0.0.1",
        "api.example",
        "192.0.2.77",
        "evil.example",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let csr_pem = key.request(&hostname, &asked).unwrap();
    let signed = trust
        .certificate(CertificateRequest {
            csr_pem,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    let ca_pem = bundle.controlplane.machine.ca.crt_pem().unwrap();
    assert_eq!(signed.ca_pem, ca_pem);
    let der = slate_pki::pem_to_der(&signed.crt_pem).unwrap();
    assert!(slate_pki::issued_by(
        &der,
        &slate_pki::pem_to_der(&ca_pem).unwrap()
    ));
    assert_eq!(
        slate_pki::leaf::names_of(&signed.crt_pem).unwrap(),
        [hostname.as_str(), "127.0.0.1", "api.example"]
    );
    assert_eq!(signed.refused_names, ["192.0.2.77", "evil.example"]);
    // The certificate and apid's key make a working TLS server identity.
    let identity = slate_pki::CertAndKey {
        cert_pem: signed.crt_pem,
        key_pem: key.to_pem(),
    };
    slate_pki::tls::server_mtls(&identity, &ca_pem).unwrap();

    // A request whose signature does not hold is refused, not signed.
    let err = trust
        .certificate(CertificateRequest {
            csr_pem:
                "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"
                    .into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
}

#[tokio::test]
async fn client_configurations_are_minted_by_machined() {
    let dir = tempfile::tempdir().unwrap();
    let (paths, bundle) = machined(dir.path(), true).await;
    let mut machine = slate_client::machine(slate_client::local(&paths.socket));
    let minted = machine
        .generate_client_configuration(GenerateClientConfigurationRequest {
            role: "os:operator".into(),
            name: "ops".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let ca_pem = bundle.controlplane.machine.ca.crt_pem().unwrap();
    assert_eq!(minted.ca_pem, ca_pem);
    let der = slate_pki::pem_to_der(&minted.crt_pem).unwrap();
    assert!(slate_pki::issued_by(
        &der,
        &slate_pki::pem_to_der(&ca_pem).unwrap()
    ));
    assert_eq!(slate_pki::role_of(&der).unwrap(), slate_pki::Role::Operator);

    let err = machine
        .generate_client_configuration(GenerateClientConfigurationRequest {
            role: "os:root".into(),
            name: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
}

#[tokio::test]
async fn nothing_is_signed_in_maintenance_mode() {
    let dir = tempfile::tempdir().unwrap();
    let (paths, _) = machined(dir.path(), false).await;
    let mut trust = TrustServiceClient::new(slate_client::local(&paths.socket));
    let key = ServerKey::generate().unwrap();
    let csr_pem = key.request("node", &["127.0.0.1".to_owned()]).unwrap();
    let err = trust
        .certificate(CertificateRequest {
            csr_pem,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(!paths.api_view.exists(), "no view without a config");
}

/// A worker whose config holds no machine CA key has apid's certificate
/// signed by a control-plane node's network trust service, which wants
/// the machine token. Both run on this host, so they share its hostname
/// and addresses: loopback names are what a worker may have signed here.
#[tokio::test]
async fn a_worker_without_the_ca_key_gets_its_certificate_from_the_control_plane() {
    let bundle = cluster();
    let worker = bundle.worker.clone();
    assert!(worker.machine.ca.key.is_none(), "gen config keeps it off");
    let ca_pem = bundle.controlplane.machine.ca.crt_pem().unwrap();

    let cp_dir = tempfile::tempdir().unwrap();
    let (_, cp) = machined_with(cp_dir.path(), Some(&bundle.controlplane), None).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trustd = listener.local_addr().unwrap().to_string();
    tokio::spawn(slate_machined::trust::serve_network(cp, None, listener));

    let worker_dir = tempfile::tempdir().unwrap();
    let (paths, _) = machined_with(worker_dir.path(), Some(&worker), Some(trustd.clone())).await;
    assert!(
        !paths.config_error.exists(),
        "a worker config without the CA key is valid: {:?}",
        std::fs::read_to_string(&paths.config_error)
    );
    let mut trust = TrustServiceClient::new(slate_client::local(&paths.socket));
    let key = ServerKey::generate().unwrap();
    let strings = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    // 192.0.2.10 is not the worker's: its machined keeps it out of what it
    // forwards, as a node with the key would not sign it.
    let signed = trust
        .certificate(CertificateRequest {
            csr_pem: key
                .request(
                    "localhost",
                    &strings(&["localhost", "127.0.0.1", "192.0.2.10"]),
                )
                .unwrap(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(signed.ca_pem, ca_pem);
    assert!(slate_pki::issued_by(
        &slate_pki::pem_to_der(&signed.crt_pem).unwrap(),
        &slate_pki::pem_to_der(&ca_pem).unwrap()
    ));
    assert_eq!(
        slate_pki::leaf::names_of(&signed.crt_pem).unwrap(),
        ["localhost", "127.0.0.1"]
    );
    assert_eq!(signed.refused_names, ["192.0.2.10"]);
    // The hostname is the worker's, but here also the control plane's:
    // the control plane signs no certificate for its own names.
    let hostname = slate_common::host::hostname();
    let err = trust
        .certificate(CertificateRequest {
            csr_pem: key
                .request(&hostname, std::slice::from_ref(&hostname))
                .unwrap(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    assert!(err.message().contains("is the caller's to have"), "{err}");
    // The worker mints no client configuration: it has no key.
    let err = slate_client::machine(slate_client::local(&paths.socket))
        .generate_client_configuration(GenerateClientConfigurationRequest {
            role: "os:admin".into(),
            name: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");

    // Straight to the network service: no token and a wrong one are
    // refused; with the token, too many names, a wildcard, a name with a
    // control character and the control-plane endpoint's host are too.
    let tls = slate_pki::tls::client(&ca_pem, None).unwrap();
    let target = slate_client::parse_target(&trustd).unwrap();
    let channel = slate_client::connect(&target, std::sync::Arc::new(tls))
        .await
        .unwrap();
    let mut direct = TrustServiceClient::new(channel);
    let ask = |names: &[String], token: Option<&str>| {
        let mut request = tonic::Request::new(CertificateRequest {
            csr_pem: key.request("n", &strings(&["localhost"])).unwrap(),
            names: names.to_vec(),
        });
        if let Some(token) = token {
            request.metadata_mut().insert(
                slate_common::constants::TRUST_TOKEN_HEADER,
                token.parse().unwrap(),
            );
        }
        request
    };
    let local = strings(&["localhost"]);
    for token in [None, Some("abcdef.0123456789abcdef")] {
        let err = direct.certificate(ask(&local, token)).await.unwrap_err();
        assert_eq!(
            err.code(),
            tonic::Code::PermissionDenied,
            "{token:?}: {err}"
        );
    }
    let token = Some(worker.machine.token.as_str());
    let many: Vec<String> = (0..=slate_machined::trust::MAX_NAMES)
        .map(|i| format!("n{i}.example"))
        .collect();
    for (names, code) in [
        (many, tonic::Code::InvalidArgument),
        (strings(&["*.example"]), tonic::Code::InvalidArgument),
        (
            strings(&["evil\n[ 1.0] INFO forged"]),
            tonic::Code::InvalidArgument,
        ),
        (strings(&["10.0.0.1"]), tonic::Code::PermissionDenied),
    ] {
        let err = direct.certificate(ask(&names, token)).await.unwrap_err();
        assert_eq!(err.code(), code, "{names:?}: {err}");
    }
    // The endpoint's host beside other names: dropped, the rest signed.
    let signed = direct
        .certificate(ask(
            &strings(&["w.example", "10.0.0.1", "192.0.2.10"]),
            token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        slate_pki::leaf::names_of(&signed.crt_pem).unwrap(),
        ["w.example", "192.0.2.10"]
    );
    assert_eq!(signed.refused_names, ["10.0.0.1"]);
}

/// A worker whose control plane does not answer says so (apid retries).
#[tokio::test]
async fn a_worker_whose_control_plane_is_unreachable_is_told_so() {
    let bundle = cluster();
    let mut worker = bundle.worker.clone();
    worker.machine.ca.key = None;
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let remote = closed.local_addr().unwrap().to_string();
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let (paths, _) = machined_with(dir.path(), Some(&worker), Some(remote)).await;
    let mut trust = TrustServiceClient::new(slate_client::local(&paths.socket));
    let key = ServerKey::generate().unwrap();
    let err = trust
        .certificate(CertificateRequest {
            csr_pem: key.request("localhost", &["localhost".to_owned()]).unwrap(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert!(err.message().contains("trust service at"), "{err}");
}
