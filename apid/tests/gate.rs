//! The gate: every method apid serves is checked against `auth::RULES`
//! before any handler runs. Each path of the table is called raw (an empty
//! message), so a service or method added without a rule shows up here,
//! and certificates with no known role or several roles are minted with
//! openssl from the machine CA, as someone outside the project would.

// The helpers below are part of the tests: a panic there is a test failing.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;

use std::path::Path;
use std::process::Command;

use slate_apid::auth::{Access, RULES};
use tonic::Code;
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

const MAINTENANCE_REFUSAL: &str = "only version, processes and apply-config are available";

/// Calls `path` with an empty message and returns the status (`Ok` is
/// code Ok). Streams end after their first message.
async fn call(channel: &Channel, path: &'static str) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(path);
    match grpc
        .server_streaming::<(), (), _>(tonic::Request::new(()), path, ProstCodec::default())
        .await
    {
        Err(status) => status,
        Ok(response) => match response.into_inner().message().await {
            Err(status) => status,
            Ok(_) => tonic::Status::ok(""),
        },
    }
}

/// A client certificate of the machine CA whose subject has `orgs` as
/// its Organizations, made by openssl.
fn openssl_client(
    dir: &Path,
    ca_pem: &str,
    key_pem: &str,
    orgs: &[&str],
) -> Option<Arc<rustls::ClientConfig>> {
    if Command::new("openssl").arg("version").output().is_err() {
        slate_testskip::skip("gate", slate_testskip::Reason::Tool("openssl"));
        return None;
    }
    std::fs::write(dir.join("ca.crt"), ca_pem).unwrap();
    std::fs::write(dir.join("ca.key"), key_pem).unwrap();
    std::fs::write(
        dir.join("ext"),
        "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n",
    )
    .unwrap();
    let subject: String =
        orgs.iter().map(|o| format!("/O={o}")).collect::<String>() + "/CN=outsider";
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["genpkey", "-algorithm", "ed25519", "-out", "client.key"]);
    run(&[
        "req",
        "-new",
        "-key",
        "client.key",
        "-subj",
        &subject,
        "-out",
        "client.csr",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext",
        "-out",
        "client.crt",
    ]);
    let id = slate_pki::CertAndKey {
        cert_pem: std::fs::read_to_string(dir.join("client.crt")).unwrap(),
        key_pem: std::fs::read_to_string(dir.join("client.key")).unwrap(),
    };
    Some(Arc::new(tls::client(ca_pem, Some(&id)).unwrap()))
}

/// A configured node, and a channel to it with an openssl-made client
/// certificate of its machine CA whose Organizations are `orgs`; `None`
/// when openssl is missing (a skip).
async fn configured_node_and_outsider(orgs: &[&str]) -> Option<(Node, Channel)> {
    let bundle = cluster();
    let node = start(Boot::Configured(&bundle.controlplane)).await;
    let (ca, key) = machine_ca(&bundle);
    let dir = tempfile::tempdir().unwrap();
    let tls = openssl_client(dir.path(), &ca, &key, orgs)?;
    let channel = client::connect(&node.target, tls).await.unwrap();
    Some((node, channel))
}

#[tokio::test]
async fn in_maintenance_mode_only_the_anonymous_rules_are_answered() {
    let node = start(Boot::Empty).await;
    let channel = client::connect(&node.target, insecure()).await.unwrap();
    for (path, access) in RULES {
        let status = call(&channel, path).await;
        match access {
            Access::Role(_) => {
                assert_eq!(
                    status.code(),
                    Code::FailedPrecondition,
                    "{path}: {status:?}"
                );
                assert!(
                    status.message().contains(MAINTENANCE_REFUSAL),
                    "{path}: {status:?}"
                );
            }
            Access::RoleOrMaintenance(_) => {
                assert!(
                    !status.message().contains(MAINTENANCE_REFUSAL),
                    "{path}: {status:?}"
                )
            }
        }
    }
    let status = call(&channel, "/slate.machine.v1.MachineService/Unlisted").await;
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    // The resource types shown without a certificate are the proto's three.
    let mut resources =
        slate_proto::resource::resource_service_client::ResourceServiceClient::new(channel);
    let refused = resources
        .list(slate_proto::resource::ListRequest {
            r#type: "apibalancer".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("only links, addresses, routes"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_certificate_with_no_known_role_reaches_nothing() {
    let Some((node, channel)) = configured_node_and_outsider(&["system:masters"]).await else {
        return;
    };
    // Reflection and the resource API included: no method answers it.
    for (path, _) in RULES {
        let status = call(&channel, path).await;
        assert_eq!(status.code(), Code::PermissionDenied, "{path}: {status:?}");
        assert!(
            status.message().contains("client certificate"),
            "{path}: {status:?}"
        );
    }
    let status = call(&channel, "/slate.machine.v1.MachineService/Unlisted").await;
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    // Without any certificate the handshake itself is refused.
    assert!(refused(&node.target, insecure()).await);
}

#[tokio::test]
async fn a_certificate_with_several_roles_gets_the_highest() {
    let Some((_node, channel)) =
        configured_node_and_outsider(&["os:reader", "os:operator", "nobody"]).await
    else {
        return;
    };
    for (path, access) in RULES {
        let (Access::Role(least) | Access::RoleOrMaintenance(least)) = access;
        let status = call(&channel, path).await;
        if Role::Operator.allows(*least) {
            assert_ne!(status.code(), Code::PermissionDenied, "{path}: {status:?}");
        } else {
            assert_eq!(status.code(), Code::PermissionDenied, "{path}: {status:?}");
            assert!(
                status.message().contains("role os:operator may not"),
                "{path}: {status:?}"
            );
        }
    }
}
