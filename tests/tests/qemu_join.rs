//! Joining by token in QEMU (docs/join.md): a control-plane VM from `gen
//! config` bootstraps etcd, where join tokens and registrations are kept.
//! A second VM boots an ISO that `slate-image --join URL --join-token
//! TOKEN` made of the same build (no config drive, no config URL),
//! registers, is listed as pending, and once accepted configures itself and answers the
//! admin's client config with a certificate the control plane signed; its
//! config holds no machine CA key. A third VM gets an auto-accept token
//! as user-data on a config drive and joins with no command. Calls then
//! reach the workers through the control plane (`-e CP -n NODE`).
//! Everything through slatectl.

// Test code outside #[test] fns: a panic here fails the test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use slate_tests::api;
use slate_tests::artifacts::Artifacts;
use slate_tests::cluster::{Cluster, LAN, lan_ip};
use slate_tests::qemu::Boot;
use slate_tests::slatectl::{self, run_as, text};

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

async fn eventually(what: &str, timeout: Duration, check: impl FnMut() -> (bool, String)) {
    slate_tests::wait::eventually(what, timeout, Duration::from_secs(2), check).await;
}

fn machines(config: &std::path::Path, cp: &str) -> Vec<serde_json::Value> {
    let out = run_as(config, cp, &["machines", "-o", "json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// A joining VM's kernel arguments: its LAN address and hostname by the
/// kernel's `ip=` (the LAN has no DHCP server), and the join URL.
fn join_cmdline(i: usize, name: &str, kernel_arg: &str) -> String {
    format!("ip={}::::{name}:eth1:off {kernel_arg}", lan_ip(i))
}

/// An ISO of this build that joins by itself, as a user makes one:
/// `slate-image --join URL --join-token TOKEN`, with node `i`'s LAN
/// address on its command line too. The kernel package comes from the
/// image's cache.
fn joining_iso(
    dir: &std::path::Path,
    i: usize,
    name: &str,
    url: &str,
    token: &str,
) -> std::path::PathBuf {
    let out = dir.join("join-image");
    std::fs::create_dir_all(&out).unwrap();
    std::os::unix::fs::symlink(Artifacts::dir().join("cache"), out.join("cache")).unwrap();
    let builder = slate_tests::artifacts::built("slate-image");
    let ip = join_cmdline(i, name, "");
    let status = std::process::Command::new(&builder)
        .arg("--out")
        .arg(&out)
        .arg("--bin-dir")
        .arg(builder.parent().unwrap())
        .args(["--cmdline", ip.trim(), "--join", url, "--join-token", token])
        .status()
        .expect("running slate-image (make image builds it)");
    assert!(status.success(), "slate-image --join failed");
    let cmdline = std::fs::read_to_string(out.join("cmdline")).unwrap();
    assert!(
        cmdline.contains(&format!("slate.join=https://{token}@")),
        "{cmdline}"
    );
    out.join("slate.iso")
}

#[tokio::test]
#[ignore = "boots three QEMU VMs: run by `make test`"]
async fn nodes_booted_with_a_join_token_register_and_join() {
    let a = Artifacts::find().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let boot = Boot::kernel_with_extensions(&a).unwrap();
    let mut cluster = Cluster::create_with_workers(1, 2, dir.path(), &boot).unwrap();
    let config = cluster.slateconfig.clone();
    let client = slate_config::clientconfig::ClientConfig::load(&config).unwrap();
    let admin = api::context_tls(&client, "slate-cluster").unwrap();
    cluster.start(0).unwrap();
    api::wait_for_version(cluster.vm(0), admin.clone(), BOOT_TIMEOUT)
        .await
        .unwrap();
    let cp = cluster.endpoint(0);
    let out = run_as(&config, &cp, &["bootstrap"]);
    assert!(out.status.success(), "{}", text(&out));

    // Tokens live in etcd: made once it answers.
    let mut token = serde_json::Value::Null;
    eventually("gen join-token", BOOT_TIMEOUT, || {
        let out = run_as(
            &config,
            &cp,
            &["gen", "join-token", "--ttl", "1h", "-o", "json"],
        );
        if out.status.success() {
            token = serde_json::from_slice(&out.stdout).unwrap();
        }
        (out.status.success(), text(&out))
    })
    .await;
    let kernel_arg = token["kernel_arg"].as_str().unwrap().to_owned();
    assert!(
        kernel_arg.starts_with(&format!(
            "slate.join=https://{}@{}:50001/sha256:",
            token["token"].as_str().unwrap(),
            lan_ip(0)
        )),
        "{token}"
    );
    let out = run_as(&config, &cp, &["join-tokens"]);
    assert!(
        text(&out).contains(&token["token"].as_str().unwrap()[..6]),
        "{}",
        text(&out)
    );
    assert!(
        !text(&out).contains(token["token"].as_str().unwrap()),
        "no secret in lists"
    );

    // worker-1: an ISO made with the join token (BIOS, GRUB), no config.
    let iso = joining_iso(
        dir.path(),
        1,
        "worker-1",
        token["join_url"].as_str().unwrap(),
        token["token"].as_str().unwrap(),
    );
    cluster.nodes[1].opts.boot = Boot::Iso { iso, uefi: false };
    cluster.nodes[1].opts.config_drive = None;
    cluster.start(1).unwrap();
    let mut id = String::new();
    eventually(
        "worker-1 pending in `slatectl machines`",
        BOOT_TIMEOUT,
        || {
            let list = machines(&config, &cp);
            if let Some(m) = list.iter().find(|m| m["hostname"] == "worker-1") {
                id = m["id"].as_str().unwrap_or_default().to_owned();
                return (m["state"] == "pending", format!("{list:?}"));
            }
            (false, format!("{list:?}"))
        },
    )
    .await;
    let listed = machines(&config, &cp);
    let m = &listed[0];
    assert!(
        m["addresses"].to_string().contains(&lan_ip(1).to_string()),
        "{m}"
    );
    assert!(
        m["cpus"].as_u64().unwrap() >= 1 && m["disks"].to_string().contains("vda"),
        "{m}"
    );
    assert_eq!(m["source"], lan_ip(1).to_string());
    let table = text(&run_as(&config, &cp, &["machines"]));
    assert!(
        table.contains("pending") && table.contains("worker-1"),
        "{table}"
    );

    // Accepted with the rest of its network: DHCP on the uplink, where the
    // test reaches its API, and etcd/kubelet on the LAN.
    let patch = dir.path().join("worker-patch.yaml");
    std::fs::write(
        &patch,
        format!(
            "machine:\n  network:\n    interfaces:\n      - interface: eth0\n        dhcp: true\n  kubelet:\n    nodeIP:\n      validSubnets: [{LAN}]\n"
        ),
    )
    .unwrap();
    let patch_arg = format!("@{}", patch.display());
    let out = run_as(
        &config,
        &cp,
        &["machine", "accept", &id, "--config-patch", &patch_arg],
    );
    assert!(out.status.success(), "{}", text(&out));
    api::wait_for_version(cluster.vm(1), admin.clone(), BOOT_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("worker-1 after accept: {e:#}"));
    let worker = cluster.endpoint(1);
    let out = run_as(&config, &worker, &["version"]);
    assert!(
        out.status.success() && text(&out).contains("worker-1"),
        "{}",
        text(&out)
    );
    let out = run_as(
        &config,
        &worker,
        &[
            "get",
            "machineconfig",
            "--insecure-show-secrets",
            "-o",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let running: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(running["config"]["machine"]["type"], "worker", "{running}");
    assert!(
        running["config"]["machine"]["ca"]["crt"].is_string(),
        "{running}"
    );
    assert!(
        running["config"]["machine"]["ca"]["key"].is_null(),
        "{running}"
    );
    assert!(
        running["config"]["cluster"]["etcd"]["ca"].is_null(),
        "{running}"
    );
    eventually("worker-1 joined", BOOT_TIMEOUT, || {
        let list = machines(&config, &cp);
        (
            list.iter()
                .any(|m| m["id"] == id.as_str() && m["state"] == "joined"),
            format!("{list:?}"),
        )
    })
    .await;

    // worker-2: an auto-accept token with the same patch, and no command;
    // the join document comes as cloud user-data on a config drive, as a
    // generic cloud image gets it.
    let out = run_as(
        &config,
        &cp,
        &[
            "gen",
            "join-token",
            "--auto-accept",
            "--config-patch",
            &patch_arg,
            "-o",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let auto: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let auto_arg = auto["kernel_arg"].as_str().unwrap().to_owned();
    let drive = dir.path().join("worker-2-join.iso");
    slate_tests::configdrive::build(&format!("{auto_arg}\n"), &drive).unwrap();
    cluster.nodes[2].opts.config_drive = Some(drive);
    cluster.nodes[2].opts.extra_cmdline = Some(join_cmdline(2, "worker-2", ""));
    cluster.start(2).unwrap();
    api::wait_for_version(cluster.vm(2), admin.clone(), BOOT_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("worker-2 with an auto-accept token: {e:#}"));
    let out = run_as(&config, &cluster.endpoint(2), &["version"]);
    assert!(text(&out).contains("worker-2"), "{}", text(&out));
    let list = machines(&config, &cp);
    assert_eq!(
        list.iter().filter(|m| m["state"] == "joined").count(),
        2,
        "{list:?}"
    );

    // Through the control plane (`-e CP -n NODE`): the workers answer over
    // the LAN with the admin's role, one row per node; a node that is not
    // there is an error of its own, and the others still answer.
    let cfg = config.to_str().unwrap();
    let out = slatectl::run(&[
        "--config", cfg, "-e", &cp, "-n", "10.5.0.3", "version", "-o", "json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("\"hostname\": \"worker-1\""),
        "{}",
        text(&out)
    );
    let out = slatectl::run(&[
        "--config",
        cfg,
        "-e",
        &cp,
        "-n",
        "10.5.0.2,10.5.0.3,10.5.0.4,10.5.0.9",
        "version",
    ]);
    assert!(!out.status.success(), "10.5.0.9 is no node");
    for host in ["cp-1", "worker-1", "worker-2"] {
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(host),
            "{}",
            text(&out)
        );
    }
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("error: 10.5.0.9"),
        "{}",
        text(&out)
    );
    // A stream, and the worker enforcing the role: a reader may read its
    // kernel log but not its secrets.
    let out = slatectl::run(&[
        "--config", cfg, "-e", &cp, "-n", "10.5.0.3", "dmesg", "--tail", "5",
    ]);
    assert!(
        out.status.success() && !out.stdout.is_empty(),
        "{}",
        text(&out)
    );
    let reader = dir.path().join("reader.slateconfig");
    let out = run_as(
        &config,
        &cp,
        &[
            "config",
            "new",
            "--roles",
            "os:reader",
            "-o",
            reader.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let rcfg = reader.to_str().unwrap();
    let out = slatectl::run(&[
        "--config",
        rcfg,
        "-e",
        &cp,
        "-n",
        "10.5.0.3",
        "get",
        "machineconfig",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = slatectl::run(&[
        "--config",
        rcfg,
        "-e",
        &cp,
        "-n",
        "10.5.0.3",
        "get",
        "machineconfig",
        "--insecure-show-secrets",
    ]);
    assert!(
        !out.status.success() && text(&out).contains("os:reader"),
        "{}",
        text(&out)
    );
    let worker_log = cluster.vm(1).console_tail(100);
    assert!(!worker_log.contains("panicked"), "{worker_log}");

    // A revoked token registers nobody; the control plane said why.
    let revoke = run_as(
        &config,
        &cp,
        &[
            "join-token",
            "revoke",
            &auto["token"].as_str().unwrap()[..6],
        ],
    );
    assert!(revoke.status.success(), "{}", text(&revoke));
    let console = cluster.vm(0).console_tail(400);
    assert!(
        console.contains("join: machine") && console.contains("registered from 10.5.0.3"),
        "{console}"
    );
}
