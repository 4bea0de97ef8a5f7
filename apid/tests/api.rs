//! apid end to end on loopback: a real TLS listener, real certificates,
//! real gRPC clients. This file: mutual TLS, roles and the API's services.

mod common;
use common::*;

use slate_apid::auth::{Access, RULES, SHOW_SECRETS, access_for};

#[tokio::test]
async fn admin_gets_version_over_mutual_tls() {
    let bundle = cluster();
    let node = start(Boot::Configured(&bundle.controlplane)).await;
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
    assert!(!v.maintenance);
}

#[tokio::test]
async fn reflection_lists_the_machine_service() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let bundle = cluster();
    let node = start(Boot::Configured(&bundle.controlplane)).await;
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
    let node = start(Boot::Configured(&bundle.controlplane)).await;
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
    let node = start(Boot::Configured(&bundle.controlplane)).await;
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
    let node = start(Boot::Configured(&node_bundle.controlplane)).await;
    let tls = admin_tls(&cluster());
    // The client's own CA did not issue the node's certificate.
    assert!(
        refused(&node.target, tls).await,
        "the client must not trust a node of another CA"
    );
}

/// Every RPC × every role: what each role may do (the roles' contract).
#[tokio::test]
async fn every_rpc_checks_its_role() {
    use slate_proto::machine::{
        BootSlotsRequest, ResetRequest, RollbackRequest, UpgradeOptions, UpgradeRequest,
    };
    use slate_proto::machine::{
        BootstrapRequest, ContainersRequest, DmesgRequest, EtcdLeaveRequest, EtcdMembersRequest,
        EtcdRemoveMemberRequest, EtcdSnapshotRequest, GenerateClientConfigurationRequest,
        ImagesRequest, KubeconfigRequest, LogsRequest, RebootRequest, ServiceActionKind,
        ServiceActionRequest, ServiceListRequest, ShutdownRequest, StaticPodsRequest,
    };
    // This machined runs no etcd and no containerd, and the host has no
    // Slate system disk: a call that gets through is answered with that,
    // which is not a refusal.
    fn reached<T>(r: Result<T, tonic::Status>) -> Result<(), tonic::Status> {
        match r {
            Err(e) if e.code() == tonic::Code::FailedPrecondition => {
                assert!(
                    e.message().contains("runs no etcd") || e.message().contains("no system disk"),
                    "{e}"
                );
                Ok(())
            }
            Err(e) if e.code() == tonic::Code::Unavailable => {
                assert!(e.message().contains("containerd is not answering"), "{e}");
                Ok(())
            }
            r => r.map(drop),
        }
    }
    let bundle = cluster();
    let node = start(Boot::Configured(&bundle.controlplane)).await;
    let (ca, key) = machine_ca(&bundle);
    let authority = Authority::from_pem(&ca, &key).unwrap();
    // (rpc, its method): the least role comes from apid's own table.
    let calls = [
        ("version", "Version"),
        ("processes", "Processes"),
        ("get machineconfig", "GetMachineConfig"),
        (
            "get machineconfig --insecure-show-secrets",
            "GetMachineConfig",
        ),
        ("apply-config", "ApplyConfiguration"),
        ("config new", "GenerateClientConfiguration"),
        ("reboot", "Reboot"),
        ("shutdown", "Shutdown"),
        ("services", "ServiceList"),
        ("logs", "Logs"),
        ("dmesg", "Dmesg"),
        ("service restart", "ServiceAction"),
        ("bootstrap", "Bootstrap"),
        ("etcd members", "EtcdMembers"),
        ("etcd snapshot", "EtcdSnapshot"),
        ("etcd leave", "EtcdLeave"),
        ("etcd remove-member", "EtcdRemoveMember"),
        ("containers", "Containers"),
        ("kubeconfig", "Kubeconfig"),
        ("get staticpods", "StaticPods"),
        ("images", "Images"),
        ("upgrade", "Upgrade"),
        ("rollback", "Rollback"),
        ("get bootslots", "BootSlots"),
        ("reset", "Reset"),
    ];
    let least_of = |access: Access| {
        let (Access::Role(r) | Access::RoleOrMaintenance(r)) = access;
        r
    };
    let table: Vec<(&str, Role)> = calls
        .iter()
        .map(|&(rpc, method)| {
            let path = format!("/slate.machine.v1.MachineService/{method}");
            let access = if rpc.ends_with("--insecure-show-secrets") {
                SHOW_SECRETS
            } else {
                access_for(&path).unwrap_or_else(|| panic!("no rule for {path}"))
            };
            (rpc, least_of(access))
        })
        .collect();
    // Every MachineService rule is called here.
    for (path, _) in RULES {
        if let Some(method) = path.strip_prefix("/slate.machine.v1.MachineService/") {
            assert!(
                calls.iter().any(|(_, m)| *m == method),
                "{path} is not called"
            );
        }
    }
    // The table says what people expect of the roles.
    for (rpc, least) in [
        ("version", Role::Reader),
        ("reboot", Role::Operator),
        ("apply-config", Role::Admin),
        ("kubeconfig", Role::Admin),
        ("get staticpods", Role::Reader),
        ("upgrade", Role::Admin),
        ("rollback", Role::Admin),
        ("reset", Role::Admin),
        ("get bootslots", Role::Reader),
    ] {
        assert!(table.contains(&(rpc, least)), "{rpc} should need {least}");
    }
    for role in Role::ALL {
        let mut api = api(&node.target, client_tls(&ca, &authority, role)).await;
        for &(rpc, least) in &table {
            let result = match rpc {
                "version" => api.version(VersionRequest {}).await.map(drop),
                "processes" => api.processes(ProcessesRequest {}).await.map(drop),
                "get machineconfig" => api
                    .get_machine_config(GetMachineConfigRequest::default())
                    .await
                    .map(|r| {
                        let yaml = r.into_inner().yaml;
                        assert!(
                            !yaml.contains(&bundle.controlplane.machine.token),
                            "{role}: token shown"
                        );
                        assert!(yaml.contains("<redacted>"));
                    }),
                "get machineconfig --insecure-show-secrets" => api
                    .get_machine_config(GetMachineConfigRequest { show_secrets: true })
                    .await
                    .map(|r| {
                        assert!(
                            r.into_inner()
                                .yaml
                                .contains(&bundle.controlplane.machine.token)
                        )
                    }),
                "apply-config" => {
                    let mut dry = apply(&bundle.controlplane, ApplyMode::Auto);
                    dry.dry_run = true;
                    api.apply_configuration(dry).await.map(drop)
                }
                "config new" => api
                    .generate_client_configuration(GenerateClientConfigurationRequest {
                        role: "os:reader".into(),
                        name: "ci".into(),
                    })
                    .await
                    .map(drop),
                "reboot" => api.reboot(RebootRequest {}).await.map(drop),
                "shutdown" => api.shutdown(ShutdownRequest {}).await.map(drop),
                "services" => api
                    .service_list(ServiceListRequest::default())
                    .await
                    .map(|r| assert_eq!(r.into_inner().services[0].id, "talker")),
                "logs" => api
                    .logs(LogsRequest {
                        id: "talker".into(),
                        follow: false,
                        tail: Some(1),
                    })
                    .await
                    .map(drop),
                "dmesg" => api
                    .dmesg(DmesgRequest {
                        follow: false,
                        tail: Some(1),
                    })
                    .await
                    .map(drop),
                "service restart" => api
                    .service_action(ServiceActionRequest {
                        id: "talker".into(),
                        action: ServiceActionKind::Restart as i32,
                    })
                    .await
                    .map(drop),
                "bootstrap" => reached(api.bootstrap(BootstrapRequest {}).await),
                "etcd members" => reached(api.etcd_members(EtcdMembersRequest {}).await),
                "etcd snapshot" => reached(api.etcd_snapshot(EtcdSnapshotRequest {}).await),
                "etcd leave" => reached(api.etcd_leave(EtcdLeaveRequest {}).await),
                "etcd remove-member" => reached(
                    api.etcd_remove_member(EtcdRemoveMemberRequest {
                        member: "cp-2".into(),
                    })
                    .await,
                ),
                "containers" => reached(api.containers(ContainersRequest::default()).await),
                "kubeconfig" => api.kubeconfig(KubeconfigRequest {}).await.map(|r| {
                    let yaml = String::from_utf8(r.into_inner().kubeconfig).unwrap();
                    assert!(yaml.contains("client-key-data"), "{yaml}");
                }),
                "get staticpods" => api.static_pods(StaticPodsRequest {}).await.map(drop),
                "images" => reached(api.images(ImagesRequest::default()).await),
                "upgrade" => reached(
                    api.upgrade(futures::stream::iter([UpgradeRequest {
                        options: Some(UpgradeOptions {
                            stage: true,
                            ..Default::default()
                        }),
                        chunk: vec![],
                    }]))
                    .await,
                ),
                "rollback" => reached(api.rollback(RollbackRequest {}).await),
                "get bootslots" => api
                    .boot_slots(BootSlotsRequest {})
                    .await
                    .map(|r| assert!(r.into_inner().slots.is_empty())),
                "reset" => reached(api.reset(ResetRequest::default()).await),
                _ => unreachable!(),
            };
            match result {
                Ok(()) => assert!(role.allows(least), "{role} may not call {rpc}, but did"),
                Err(e) => {
                    assert!(!role.allows(least), "{role} should call {rpc}: {e}");
                    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{role} {rpc}: {e}");
                }
            }
        }
    }
    // Admin and operator rebooted and shut down; the reader did not.
    assert_eq!(
        *node.power.lock().unwrap(),
        [
            Action::Reboot,
            Action::PowerOff,
            Action::Reboot,
            Action::PowerOff
        ]
    );
}

#[tokio::test]
async fn a_minted_reader_config_reads_but_cannot_reboot() {
    use slate_proto::machine::{GenerateClientConfigurationRequest, RebootRequest};
    let bundle = cluster();
    let node = start(Boot::Configured(&bundle.controlplane)).await;
    let mut admin = api(&node.target, admin_tls(&bundle)).await;
    let minted = admin
        .generate_client_configuration(GenerateClientConfigurationRequest {
            role: "os:reader".into(),
            name: "dashboards".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let id = slate_pki::CertAndKey {
        cert_pem: minted.crt_pem,
        key_pem: minted.key_pem,
    };
    let reader_tls = Arc::new(tls::client(&minted.ca_pem, Some(&id)).unwrap());
    let mut reader = api(&node.target, reader_tls).await;
    reader.version(VersionRequest {}).await.unwrap();
    let err = reader.reboot(RebootRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("os:reader"), "{err}");
    let err = admin
        .generate_client_configuration(GenerateClientConfigurationRequest {
            role: "os:root".into(),
            name: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

/// A service's output and the kernel log stream through apid: the kept
/// lines first, then (following) new ones as the service writes them; a
/// restart shows in the service's events.
#[tokio::test]
async fn logs_follow_and_service_restart_through_apid() {
    use futures::StreamExt as _;
    use slate_proto::machine::{
        DmesgRequest, LogsRequest, ServiceActionKind, ServiceActionRequest, ServiceListRequest,
    };
    if slate_machined::services::cgroup::cgroup2_mount().is_none()
        // /proc/self belongs to the process's effective user.
        || std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) != 0
    {
        slate_testskip::skip(
            "logs_follow_and_service_restart_through_apid",
            slate_testskip::Reason::Setup("needs root and cgroup2"),
        );
        return;
    }
    let bundle = cluster();
    let node = start(Boot::Configured(&bundle.controlplane)).await;
    let mut api = api(&node.target, admin_tls(&bundle)).await;
    let mut lines = api
        .logs(LogsRequest {
            id: "talker".into(),
            follow: true,
            tail: None,
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next())
        .await
        .expect("a first line")
        .unwrap()
        .unwrap();
    assert_eq!(first.line, "hello from talker");
    // Following: new lines arrive while the service runs.
    for _ in 0..3 {
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), lines.next())
            .await
            .expect("a followed line")
            .unwrap()
            .unwrap();
        assert_eq!(next.line, "tick");
    }

    api.service_action(ServiceActionRequest {
        id: "talker".into(),
        action: ServiceActionKind::Restart as i32,
    })
    .await
    .unwrap();
    eventually("the restart in the events", async || {
        let s = &api
            .service_list(ServiceListRequest {
                id: "talker".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .services[0];
        s.state == "Running"
            && s.events
                .iter()
                .filter(|e| e.message.starts_with("started, pid"))
                .count()
                == 2
    })
    .await;
    let unknown = api
        .service_list(ServiceListRequest { id: "etcdd".into() })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert!(
        unknown.message().contains("talker"),
        "{}",
        unknown.message()
    );

    let kernel: Vec<String> = api
        .dmesg(DmesgRequest {
            follow: false,
            tail: Some(3),
        })
        .await
        .unwrap()
        .into_inner()
        .map(|l| l.unwrap().line)
        .collect()
        .await;
    assert_eq!(kernel.len(), 3, "{kernel:?}");
    assert!(kernel.iter().all(|l| l.starts_with('[')), "{kernel:?}");
}

#[tokio::test]
async fn processes_show_each_process_s_user_and_capabilities() {
    let bundle = cluster();
    let node = start(Boot::Configured(&bundle.controlplane)).await;
    let mut api = api(&node.target, admin_tls(&bundle)).await;
    let processes = api
        .processes(ProcessesRequest {})
        .await
        .unwrap()
        .into_inner()
        .processes;
    // This test runs apid in its own process: it lists itself.
    let me = processes
        .iter()
        .find(|p| p.pid == std::process::id() as i32)
        .expect("the test's own process is listed");
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(me.uid.to_string(), field("Uid:")[1]);
    let cap_eff = u64::from_str_radix(&field("CapEff:")[0], 16).unwrap();
    assert_eq!(
        me.capabilities.is_empty(),
        cap_eff == 0,
        "{:?}",
        me.capabilities
    );
    if cap_eff & (1 << 21) != 0 && me.capabilities != ["all"] {
        assert!(
            me.capabilities.iter().any(|c| c == "sys_admin"),
            "{:?}",
            me.capabilities
        );
    }
}
