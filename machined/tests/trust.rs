//! The trust service on machined's socket: apid's certificate is signed
//! here, with the machine CA key apid never reads, and only for the
//! node's own names; client configurations are minted here too.
// Test code outside #[test] fns: a panic here fails the test.
#![allow(clippy::unwrap_used)]

use slate_machined::node::Storage;
use slate_machined::power::Power;
use slate_machined::services::Supervisor;
use slate_machined::state::State;
use slate_machined::{Paths, boot};
use slate_pki::ServerKey;
use slate_proto::machine::GenerateClientConfigurationRequest;
use slate_proto::trust::CertificateRequest;
use slate_proto::trust::trust_service_client::TrustServiceClient;

/// machined on a Unix socket in `dir`, configured with a control-plane
/// config whose certSANs name `api.example`, or in maintenance mode.
async fn machined(
    dir: &std::path::Path,
    configured: bool,
) -> (Paths, slate_config::generate::Bundle) {
    let bundle = slate_config::generate::generate(&slate_config::generate::Options {
        cluster_name: "trust".into(),
        endpoint: "https://10.0.0.1:6443".into(),
        additional_sans: vec!["api.example".into()],
        ..Default::default()
    })
    .unwrap();
    let paths = Paths::under(dir);
    let state_dir = dir.join("state");
    std::fs::create_dir(&state_dir).unwrap();
    let state = State::new(&state_dir);
    if configured {
        state.save(&bundle.controlplane).unwrap();
    }
    let node = boot(
        &paths,
        Storage::Fixed(Some(state.clone())),
        Ok(Some(state)),
        Power::Record(Default::default()),
    )
    .await;
    let services = Supervisor::new(dir.join("cgroups"), None);
    let serving = paths.clone();
    tokio::spawn(async move { slate_machined::serve(&serving, node, services, None).await });
    (paths, bundle)
}

fn sans(pem: &str) -> Vec<String> {
    let der = slate_pki::pem_to_der(pem).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap().value;
    san.general_names
        .iter()
        .map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => (*d).to_owned(),
            x509_parser::extensions::GeneralName::IPAddress(b) if b.len() == 4 => {
                std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).unwrap()).to_string()
            }
            x509_parser::extensions::GeneralName::IPAddress(b) => {
                std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).unwrap()).to_string()
            }
            other => format!("{other:?}"),
        })
        .collect()
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
        .certificate(CertificateRequest { csr_pem })
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
        sans(&signed.crt_pem),
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
        .certificate(CertificateRequest { csr_pem })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(!paths.api_view.exists(), "no view without a config");
}
