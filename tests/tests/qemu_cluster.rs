//! Three control-plane nodes in QEMU on one LAN: `slatectl bootstrap` on
//! the first starts etcd, the others join by themselves (learner, then
//! voter); a power cut of one keeps quorum and it rejoins when it boots.
//! etcd is checked with Debian's etcdctl through forwarded ports, as an
//! operator would. A worker without the machine CA key gets its API
//! certificate from the control plane's trust service.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use slate_tests::api;
use slate_tests::artifacts::Artifacts;
use slate_tests::cluster::Cluster;
use slate_tests::qemu::Boot;
use slate_tests::slatectl::{Follow, run_as, text};

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
/// Three TCG guests on two cores: etcd's elections and catch-up are slow.
const ETCD_TIMEOUT: Duration = Duration::from_secs(300);

struct Etcdctl {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Etcdctl {
    fn run(&self, endpoints: &[String], args: &[&str]) -> Output {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .arg(format!("--cacert={}", self.ca.display()))
            .arg(format!("--cert={}", self.cert.display()))
            .arg(format!("--key={}", self.key.display()))
            .args(["--dial-timeout=5s", "--command-timeout=10s"])
            .args(args)
            .output()
            .expect("running etcdctl (Debian package etcd-client: make deps)");
        eprintln!("$ etcdctl {}\n{}", args.join(" "), text(&out));
        out
    }
}

/// [`slate_tests::wait::eventually`], every 2 s.
async fn eventually(what: &str, timeout: Duration, check: impl FnMut() -> (bool, String)) {
    slate_tests::wait::eventually(what, timeout, Duration::from_secs(2), check).await;
}

fn members_json(config: &Path, node: &str) -> Option<Vec<serde_json::Value>> {
    let out = run_as(config, node, &["etcd", "members", "-o", "json"]);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

#[tokio::test]
#[ignore = "boots three QEMU VMs: run by `make test`"]
async fn three_control_planes_bootstrap_join_survive_a_power_cut_and_rejoin() {
    let a = Artifacts::find().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let boot = Boot::kernel_with_extensions(&a).unwrap();
    let mut cluster = Cluster::create(3, dir.path(), &boot).unwrap();
    let config = cluster.slateconfig.clone();
    let client = slate_config::clientconfig::ClientConfig::load(&config).unwrap();
    let admin = api::context_tls(&client, "slate-cluster").unwrap();
    for i in 0..3 {
        cluster.start(i).unwrap();
    }
    for i in 0..3 {
        api::wait_for_version(cluster.vm(i), admin.clone(), BOOT_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("node {}: {e:#}", i + 1));
    }
    let node = |c: &Cluster, i: usize| c.endpoint(i);

    // Before the bootstrap etcd waits, and says what for.
    let (n1, n2) = (node(&cluster, 0), node(&cluster, 1));
    eventually("etcd on node 2 waits for a bootstrap", BOOT_TIMEOUT, || {
        let out = run_as(&config, &n2, &["service", "etcd"]);
        (text(&out).contains("slatectl bootstrap"), text(&out))
    })
    .await;

    let out = run_as(&config, &n1, &["bootstrap"]);
    assert!(out.status.success(), "{}", text(&out));
    let again = run_as(&config, &n1, &["bootstrap"]);
    assert!(!again.status.success(), "a second bootstrap is refused");
    assert!(text(&again).contains("already"), "{}", text(&again));

    // Nodes 2 and 3 join by themselves and are promoted to voters.
    eventually("three voting members", ETCD_TIMEOUT, || {
        let members = members_json(&config, &n1).unwrap_or_default();
        let voters = members
            .iter()
            .filter(|m| m["learner"] == false && m["name"] != "")
            .count();
        (voters == 3, format!("{members:?}"))
    })
    .await;
    let out = run_as(&config, &n1, &["etcd", "members"]);
    for name in ["cp-1", "cp-2", "cp-3"] {
        assert!(text(&out).contains(name), "{}", text(&out));
    }
    // A bootstrap where a cluster runs would split it.
    let split = run_as(&config, &n2, &["bootstrap"]);
    assert!(!split.status.success(), "{}", text(&split));

    let (ca, cert, key) = cluster.etcdctl_identity().unwrap();
    let etcdctl = Etcdctl { ca, cert, key };
    let urls: Vec<String> = (0..3).map(|i| cluster.etcd_url(i).unwrap()).collect();
    eventually("etcdctl endpoint health: 3 healthy", ETCD_TIMEOUT, || {
        let out = etcdctl.run(&urls, &["endpoint", "health"]);
        let healthy = text(&out).matches("is healthy").count();
        (out.status.success() && healthy == 3, text(&out))
    })
    .await;
    let out = etcdctl.run(&urls[..1], &["put", "before", "1"]);
    assert!(out.status.success(), "{}", text(&out));

    // Node 1's etcd log and kernel log, followed live while node 3 loses
    // its power: etcd says it lost the peer.
    let etcd_log = Follow::start(&config, &n1, &["logs", "etcd", "-f", "--tail", "0"]);
    let dmesg = Follow::start(&config, &n1, &["dmesg", "-f", "--tail", "3"]);

    // A power cut of node 3: two of three keep quorum, writes succeed.
    cluster.power_off(2);
    // If node 3 led, the two elect a new leader first: retry meanwhile.
    eventually("a write with node 3 down", ETCD_TIMEOUT, || {
        let out = etcdctl.run(&urls[..1], &["put", "during", "2"]);
        (out.status.success(), text(&out))
    })
    .await;
    eventually("the write read through node 2", ETCD_TIMEOUT, || {
        let out = etcdctl.run(&urls[1..2], &["get", "during", "--print-value-only"]);
        (
            String::from_utf8_lossy(&out.stdout).trim() == "2",
            text(&out),
        )
    })
    .await;

    assert!(
        etcd_log
            .wait_for("lost the TCP streaming connection", Duration::from_secs(60))
            .await
            .is_some(),
        "`logs etcd -f` showed nothing of the lost peer: {:?}",
        etcd_log.lines()
    );
    assert!(
        dmesg.lines().len() >= 3,
        "`dmesg -f --tail 3` printed {:?}",
        dmesg.lines()
    );
    drop((etcd_log, dmesg));

    // Powered on again, it starts from its data on EPHEMERAL and catches up.
    cluster.start(2).unwrap();
    api::wait_for_version(cluster.vm(2), admin.clone(), BOOT_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("node 3 after the power cut: {e:#}"));
    let url3 = vec![cluster.etcd_url(2).unwrap()];
    eventually(
        "node 3 rejoined with the write it missed",
        ETCD_TIMEOUT,
        || {
            let out = etcdctl.run(
                &url3,
                &["get", "during", "--print-value-only", "--consistency=s"],
            );
            (
                String::from_utf8_lossy(&out.stdout).trim() == "2",
                text(&out),
            )
        },
    )
    .await;
    let members = members_json(&config, &node(&cluster, 2)).unwrap();
    assert_eq!(members.len(), 3, "the same three members: {members:?}");

    // The etcd logs and a snapshot, as an operator takes them.
    let out = run_as(&config, &n1, &["logs", "etcd", "--tail", "5"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        5,
        "{}",
        text(&out)
    );
    let snap = dir.path().join("etcd.snapshot");
    let out = run_as(&config, &n1, &["etcd", "snapshot", snap.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let out = etcdctl.run(
        &[],
        &["snapshot", "status", snap.to_str().unwrap(), "-w", "json"],
    );
    assert!(
        out.status.success(),
        "etcdctl reads the snapshot: {}",
        text(&out)
    );

    // An upgrade that would cost etcd its quorum is refused: with node 3
    // down, node 1's reboot would leave one member of three.
    let bundle = a.bundle.to_str().unwrap();
    cluster.power_off(2);
    let out = run_as(&config, &n1, &["upgrade", "--image", bundle, "--stage"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("would lose quorum"), "{}", text(&out));
    cluster.start(2).unwrap();
    api::wait_for_version(cluster.vm(2), admin.clone(), BOOT_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("node 3 after the power cut: {e:#}"));
    let urls: Vec<String> = (0..3).map(|i| cluster.etcd_url(i).unwrap()).collect();
    eventually("three healthy members again", ETCD_TIMEOUT, || {
        let out = etcdctl.run(&urls, &["endpoint", "health"]);
        let healthy = text(&out).matches("is healthy").count();
        (out.status.success() && healthy == 3, text(&out))
    })
    .await;

    // A rolling upgrade as a user runs it: one slatectl for the three
    // nodes; each is written, reboots onto its new slot and is healthy
    // before the next starts. etcd takes writes throughout.
    let nodes: Vec<String> = (0..3).map(|i| node(&cluster, i)).collect();
    let mut cli = std::process::Command::new(slate_tests::slatectl::path())
        .args(["--config", config.to_str().unwrap(), "-n", &nodes.join(",")])
        .args(["upgrade", "--image", bundle])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(1200);
    let mut rebooted = [false; 3];
    let mut last_write = std::time::Instant::now();
    let mut longest_gap = Duration::ZERO;
    while cli.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the rolling upgrade did not end; rebooted: {rebooted:?}"
        );
        for i in 0..3 {
            if !cluster.vm(i).is_running() {
                assert!(!rebooted[i], "node {} rebooted twice", i + 1);
                assert!(
                    rebooted[..i].iter().all(|r| *r),
                    "node {} went before the nodes ahead of it",
                    i + 1
                );
                rebooted[i] = true;
                cluster.restart_from_disk(i).unwrap();
            }
        }
        let out = etcdctl.run(&urls, &["put", "rolling", "x", "--command-timeout=3s"]);
        if out.status.success() {
            longest_gap = longest_gap.max(last_write.elapsed());
            last_write = std::time::Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let out = cli.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(rebooted, [true; 3], "{}", text(&out));
    assert_eq!(
        text(&out).matches("healthy on slot A").count(),
        3,
        "{}",
        text(&out)
    );
    longest_gap = longest_gap.max(last_write.elapsed());
    eprintln!("longest time without an etcd write during the rolling upgrade: {longest_gap:?}");
    assert!(
        longest_gap < Duration::from_secs(30),
        "etcd took no write for {longest_gap:?} during the rolling upgrade"
    );
    for i in 0..3 {
        let out = run_as(
            &config,
            &node(&cluster, i),
            &["get", "bootslots", "-o", "json"],
        );
        let slots: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(slots[0]["state"], "good", "node {}: {slots}", i + 1);
        assert_eq!(slots[0]["active"], true, "node {}: {slots}", i + 1);
    }
}

/// A worker whose config holds no machine CA key (as `gen config` writes
/// worker.yaml) has its API certificate signed by the control-plane node's
/// trust service over the LAN (port 50001, the machine token), and
/// answers the admin with it.
#[tokio::test]
#[ignore = "boots two QEMU VMs: run by `make test`"]
async fn a_worker_without_the_ca_key_is_reachable_with_a_certificate_from_the_control_plane() {
    let a = Artifacts::find().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::create_with_workers(1, 1, dir.path(), &Boot::kernel(&a)).unwrap();
    assert!(cluster.bundle.worker.machine.ca.key.is_none());
    let config = cluster.slateconfig.clone();
    let client = slate_config::clientconfig::ClientConfig::load(&config).unwrap();
    let admin = api::context_tls(&client, "slate-cluster").unwrap();
    // The worker first: it waits for the control plane (apid retries,
    // init restarts it) rather than giving up.
    cluster.start(1).unwrap();
    cluster.start(0).unwrap();
    for i in [0, 1] {
        api::wait_for_version(cluster.vm(i), admin.clone(), BOOT_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("node {}: {e:#}", i + 1));
    }
    let worker = cluster.endpoint(1);
    let out = run_as(&config, &worker, &["version"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("worker-1"), "{}", text(&out));
    // Its running config holds no machine CA key, and it mints no client
    // configs; the control plane logged whose certificate it signed.
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
    assert!(
        running["config"]["machine"]["ca"]["crt"].is_string(),
        "{running}"
    );
    assert!(
        running["config"]["machine"]["ca"]["key"].is_null(),
        "{running}"
    );
    let minted = dir.path().join("reader.slateconfig");
    let out = run_as(
        &config,
        &worker,
        &[
            "config",
            "new",
            "--roles",
            "os:reader",
            "-o",
            minted.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success(), "a worker minted a client config");
    assert!(
        text(&out).contains("control-plane node signs"),
        "{}",
        text(&out)
    );
    let cp_console = cluster.vm(0).console_tail(200);
    assert!(
        cp_console.contains("trust service: signed an API certificate for 10.5.0.3"),
        "{cp_console}"
    );
}
