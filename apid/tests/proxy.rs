//! Forwarding: a call to node A naming node B (`x-slate-node`, as
//! `slatectl -e A -n B` sends it) is answered by B, which enforces the
//! original caller's role; only a certificate with the Organization
//! os:impersonator may name a role, and a forwarded call is not forwarded
//! again. Both nodes are control-plane nodes of one cluster on loopback.
// Test code outside #[test] fns: a panic here fails the test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use slate_client::{Conn, NodeHeader};
use slate_common::constants::{NODE_HEADER, ROLE_HEADER};
use slate_proto::machine::RebootRequest;
use slate_proto::machine::machine_service_client::MachineServiceClient;
use tonic::Code;

fn named(bundle: &generate::Bundle, hostname: &str) -> MachineConfig {
    let mut config = bundle.controlplane.clone();
    config.machine.network.hostname = Some(hostname.into());
    config
}

async fn through(
    a: &Target,
    tls: Arc<rustls::ClientConfig>,
    b: &Target,
) -> MachineServiceClient<Conn> {
    let channel = client::connect(a, tls).await.unwrap();
    MachineServiceClient::new(Conn::new(channel, NodeHeader::to(b).unwrap()))
}

/// The hostname in a config as `get machineconfig` shows it (redacted
/// configs do not parse as configs).
fn hostname_of(yaml: &str) -> Option<&str> {
    yaml.lines()
        .find_map(|l| l.trim().strip_prefix("hostname: "))
}

async fn config_of(
    api: &mut MachineServiceClient<Conn>,
    secrets: bool,
) -> Result<String, tonic::Status> {
    api.get_machine_config(GetMachineConfigRequest {
        show_secrets: secrets,
    })
    .await
    .map(|r| r.into_inner().yaml)
}

#[tokio::test]
async fn a_call_through_a_control_plane_is_answered_by_the_node_named_with_the_callers_role() {
    let bundle = cluster();
    let a = start(Boot::Configured(&named(&bundle, "node-a"))).await;
    let b = start(Boot::Configured(&named(&bundle, "node-b"))).await;
    let (ca, key) = machine_ca(&bundle);
    let authority = Authority::from_pem(&ca, &key).unwrap();
    let admin = admin_tls(&bundle);
    let reader = client_tls(&ca, &authority, Role::Reader);

    // apid serves once machined signed its certificate.
    eventually("both nodes answer", async || {
        !refused(&a.target, admin.clone()).await && !refused(&b.target, admin.clone()).await
    })
    .await;

    let mut as_admin = through(&a.target, admin.clone(), &b.target).await;
    let yaml = config_of(&mut as_admin, true).await.unwrap();
    assert_eq!(hostname_of(&yaml), Some("node-b"), "B answered: {yaml}");
    assert!(yaml.contains("key:"), "an admin sees secrets");

    // B enforces the caller's role, not A's proxy certificate's.
    let mut as_reader = through(&a.target, reader.clone(), &b.target).await;
    let yaml = config_of(&mut as_reader, false).await.unwrap();
    assert_eq!(hostname_of(&yaml), Some("node-b"));
    let denied = config_of(&mut as_reader, true).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("os:reader"), "{denied:?}");
    let denied = as_reader.reboot(RebootRequest {}).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(b.power.lock().unwrap().is_empty(), "no reboot asked");

    // The call is checked here before it is forwarded: a reader's reboot
    // is refused by A itself, even for a node that does not answer.
    let nowhere = slate_client::parse_target("127.0.0.1:1").unwrap();
    let mut reader_nowhere = through(&a.target, reader.clone(), &nowhere).await;
    let e = reader_nowhere.reboot(RebootRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // A node that does not answer is named.
    let nobody = slate_client::parse_target("127.0.0.1:1").unwrap();
    let mut lost = through(&a.target, admin.clone(), &nobody).await;
    let e = lost.version(VersionRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("127.0.0.1:1"), "{e:?}");
}

#[tokio::test]
async fn only_an_impersonator_names_a_role_and_only_once() {
    let bundle = cluster();
    let a = start(Boot::Configured(&named(&bundle, "node-a"))).await;
    let b = start(Boot::Configured(&named(&bundle, "node-b"))).await;
    let (ca, key) = machine_ca(&bundle);
    let authority = Authority::from_pem(&ca, &key).unwrap();
    let admin = admin_tls(&bundle);
    eventually("both nodes answer", async || {
        !refused(&a.target, admin.clone()).await && !refused(&b.target, admin.clone()).await
    })
    .await;
    let reboot_as = |role: Option<&str>| {
        let mut request = tonic::Request::new(RebootRequest {});
        if let Some(role) = role {
            request
                .metadata_mut()
                .insert(ROLE_HEADER, role.parse().unwrap());
        }
        request
    };

    // A reader naming a role for itself stays a reader.
    let reader = client_tls(&ca, &authority, Role::Reader);
    let e = api(&b.target, reader)
        .await
        .reboot(reboot_as(Some("os:admin")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // An impersonator is what it names, and nothing without a name.
    let proxy = authority.issue_impersonator("apid test").unwrap();
    let proxy_tls = Arc::new(tls::client(&ca, Some(&proxy)).unwrap());
    let mut as_proxy = api(&b.target, proxy_tls.clone()).await;
    let e = as_proxy.reboot(reboot_as(None)).await.unwrap_err();
    assert!(e.message().contains("names no caller's role"), "{e:?}");
    let e = as_proxy
        .reboot(reboot_as(Some("os:reader")))
        .await
        .unwrap_err();
    assert!(e.message().contains("role os:reader may not"), "{e:?}");
    let e = as_proxy
        .reboot(reboot_as(Some("os:impersonator")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    as_proxy
        .reboot(reboot_as(Some("os:operator")))
        .await
        .unwrap();
    eventually("B asked for a reboot", async || {
        !b.power.lock().unwrap().is_empty()
    })
    .await;

    // An impersonator's call naming a node is not forwarded again.
    let mut request = reboot_as(Some("os:admin"));
    request
        .metadata_mut()
        .insert(NODE_HEADER, b.target.to_string().parse().unwrap());
    let e = api(&a.target, proxy_tls)
        .await
        .reboot(request)
        .await
        .unwrap_err();
    assert!(e.message().contains("not forwarded again"), "{e:?}");
    assert!(a.power.lock().unwrap().is_empty());
}

/// A node in maintenance mode has no certificate to forward with and no
/// caller to vouch for: it forwards nothing.
#[tokio::test]
async fn a_node_in_maintenance_mode_forwards_nothing() {
    let bundle = cluster();
    let blank = start(Boot::Empty).await;
    let b = start(Boot::Configured(&named(&bundle, "node-b"))).await;
    let admin = admin_tls(&bundle);
    eventually("B answers", async || {
        !refused(&b.target, admin.clone()).await
    })
    .await;
    let mut via_blank = through(&blank.target, insecure(), &b.target).await;
    let e = via_blank.version(VersionRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("client certificate"), "{e:?}");
}
