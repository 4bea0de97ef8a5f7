//! apid end to end on loopback: maintenance mode and apply-config in each
//! of its modes, with machined behind it.

mod common;
use common::*;

#[tokio::test]
async fn an_invalid_config_gives_maintenance_mode_with_the_reason() {
    let node = start(Boot::Invalid(
        "invalid machine config: user-data: line 3, column 1: bad",
    ))
    .await;
    let insecure = Arc::new(tls::client_insecure().unwrap());
    let channel = client::connect(&node.target, insecure).await.unwrap();
    let mut api = client::machine(channel);
    let v = api.version(VersionRequest {}).await.unwrap().into_inner();
    assert!(v.maintenance);
    assert!(
        v.maintenance_reason.contains("line 3"),
        "{}",
        v.maintenance_reason
    );
    let err = api
        .get_machine_config(GetMachineConfigRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("maintenance mode"), "{err}");
}

#[tokio::test]
async fn maintenance_mode_takes_a_config_then_requires_certificates() {
    let bundle = cluster();
    let node = start(Boot::Empty).await;
    let mut anon = api(&node.target, insecure()).await;
    let v = anon.version(VersionRequest {}).await.unwrap().into_inner();
    assert!(v.maintenance, "no config: maintenance mode");
    assert!(
        v.maintenance_reason.contains("no machine config"),
        "{}",
        v.maintenance_reason
    );

    // A broken config is refused with every problem named; nothing changes.
    let mut broken = bundle.controlplane.clone();
    broken.cluster.network.pod_subnets = vec!["10.0.0.0/33".into()];
    let err = anon
        .apply_configuration(apply(&broken, ApplyMode::Auto))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("cluster.network.podSubnets[0]"),
        "{err}"
    );
    assert!(!node.dir.path().join("state/config.yaml").exists());

    let r = anon
        .apply_configuration(apply(&bundle.controlplane, ApplyMode::Auto))
        .await
        .unwrap()
        .into_inner();
    assert!(
        r.summary.contains("first config: applied live"),
        "{}",
        r.summary
    );
    assert!(
        node.dir.path().join("state/config.yaml").exists(),
        "persisted on STATE"
    );

    // New connections now need a certificate of the machine CA ...
    let target = node.target.clone();
    eventually("insecure clients refused", async || {
        refused(&target, insecure()).await
    })
    .await;
    // ... the old anonymous connection gets nothing either ...
    let err = anon.version(VersionRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    // ... and the admin is served.
    let mut admin = api(&node.target, admin_tls(&bundle)).await;
    let v = admin.version(VersionRequest {}).await.unwrap().into_inner();
    assert!(!v.maintenance);
    assert!(
        node.power.lock().unwrap().is_empty(),
        "no reboot for a first config"
    );
}

#[tokio::test]
async fn bad_configs_change_nothing() {
    let bundle = cluster();
    let node = start(Boot::Configured(&bundle.controlplane)).await;
    let mut admin = api(&node.target, admin_tls(&bundle)).await;
    let before = admin
        .get_machine_config(GetMachineConfigRequest { show_secrets: true })
        .await
        .unwrap()
        .into_inner()
        .yaml;
    let other = cluster();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "oversized",
            vec![b'#'; 2 << 20],
            "larger than a machine config may be",
        ),
        (
            "binary junk",
            vec![0xff, 0x00, 0x13, 0x37],
            "not a text file",
        ),
        (
            "wrong version",
            bundle
                .controlplane
                .to_yaml()
                .unwrap()
                .replace("version: v1alpha1", "version: v2")
                .into_bytes(),
            "version: \"v2\" is not supported",
        ),
        (
            "another cluster's CA",
            other.controlplane.to_yaml().unwrap().into_bytes(),
            "belongs to another cluster",
        ),
    ];
    for (what, data, expected) in cases {
        let err = admin
            .apply_configuration(ApplyConfigurationRequest {
                data,
                mode: ApplyMode::Auto as i32,
                dry_run: false,
                try_timeout_seconds: 0,
            })
            .await
            .unwrap_err();
        assert!(err.message().contains(expected), "{what}: {err}");
    }
    let after = admin
        .get_machine_config(GetMachineConfigRequest { show_secrets: true })
        .await
        .unwrap()
        .into_inner()
        .yaml;
    assert_eq!(before, after, "the running config changed");
    assert!(node.power.lock().unwrap().is_empty());
}

#[tokio::test]
async fn modes_dry_run_reboot_staged_and_no_reboot() {
    let bundle = cluster();
    let node = start(Boot::Configured(&bundle.controlplane)).await;
    let mut admin = api(&node.target, admin_tls(&bundle)).await;

    let mut live = bundle.controlplane.clone();
    live.machine.cert_sans.push("10.9.9.9".into());
    let mut dry = apply(&live, ApplyMode::Auto);
    dry.dry_run = true;
    let r = admin.apply_configuration(dry).await.unwrap().into_inner();
    assert_eq!(r.changes, [r#"+ machine.certSANs: ["10.9.9.9"]"#]);
    assert!(r.reboot_required_by.is_empty());
    assert!(r.summary.starts_with("dry run:"), "{}", r.summary);
    assert_eq!(r.mode, ApplyMode::NoReboot as i32);
    let shown = admin
        .get_machine_config(GetMachineConfigRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        !shown.yaml.contains("10.9.9.9"),
        "dry run changed the config"
    );

    // A change that needs a reboot: refused by no-reboot, rebooted by auto.
    let mut reboot = bundle.controlplane.clone();
    reboot.cluster.network.pod_subnets = vec!["10.200.0.0/16".into()];
    let err = admin
        .apply_configuration(apply(&reboot, ApplyMode::NoReboot))
        .await
        .unwrap_err();
    assert!(
        err.message().contains("cluster.network.podSubnets"),
        "{err}"
    );
    let r = admin
        .apply_configuration(apply(&reboot, ApplyMode::Auto))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.mode, ApplyMode::Reboot as i32);
    assert_eq!(r.reboot_required_by, ["cluster.network.podSubnets"]);
    assert_eq!(*node.power.lock().unwrap(), [Action::Reboot]);
    let stored = State::new(node.dir.path().join("state")).load().unwrap();
    assert_eq!(stored.cluster.network.pod_subnets, ["10.200.0.0/16"]);

    // Staged: stored for the next boot, shown as staged, running unchanged.
    let r = admin
        .apply_configuration(apply(&live, ApplyMode::Staged))
        .await
        .unwrap()
        .into_inner();
    assert!(r.summary.contains("staged"), "{}", r.summary);
    let shown = admin
        .get_machine_config(GetMachineConfigRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(!shown.yaml.contains("10.9.9.9"));
    assert!(shown.staged_yaml.contains("10.9.9.9"));

    // Live: applied now, no reboot.
    admin
        .apply_configuration(apply(&live, ApplyMode::NoReboot))
        .await
        .unwrap();
    let shown = admin
        .get_machine_config(GetMachineConfigRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(shown.yaml.contains("10.9.9.9"));
    assert_eq!(node.power.lock().unwrap().len(), 1, "no second reboot");
}

#[tokio::test]
async fn try_mode_rolls_back_unless_confirmed() {
    let bundle = cluster();
    let node = start(Boot::Configured(&bundle.controlplane)).await;
    let mut admin = api(&node.target, admin_tls(&bundle)).await;
    let mut trial = bundle.controlplane.clone();
    trial.machine.network.hostname = Some("on-trial".into());
    let shows =
        async |admin: &mut slate_proto::machine::machine_service_client::MachineServiceClient<
            tonic::transport::Channel,
        >,
               needle: &str| {
            admin
                .get_machine_config(GetMachineConfigRequest::default())
                .await
                .unwrap()
                .into_inner()
                .yaml
                .contains(needle)
        };
    let mut request = apply(&trial, ApplyMode::Try);
    request.try_timeout_seconds = 1;
    admin.apply_configuration(request.clone()).await.unwrap();
    assert!(shows(&mut admin, "on-trial").await, "applied live");
    let stored = State::new(node.dir.path().join("state")).load().unwrap();
    assert_eq!(
        stored.machine.network.hostname, None,
        "a try is not persisted"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(
        !shows(&mut admin, "on-trial").await,
        "rolled back after the timeout"
    );

    // Confirmed by another apply before the timeout: it stays.
    admin.apply_configuration(request).await.unwrap();
    admin
        .apply_configuration(apply(&trial, ApplyMode::NoReboot))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(shows(&mut admin, "on-trial").await, "confirmed, kept");
}
