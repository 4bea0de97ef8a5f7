//! The machine config lifecycle on a real node, driven by the slatectl
//! binary as a user runs it: maintenance mode, `apply-config --insecure`,
//! persistence on STATE across a reboot, roles.
// Test code outside #[test] fns: a panic here fails the test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use slate_pki::tls;
use slate_tests::api;
use slate_tests::artifacts::Artifacts;
use slate_tests::console;
use slate_tests::qemu::{Boot, Vm, VmOptions};

const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

use slate_tests::slatectl::{gen_config, run as slatectl, run_as as slatectl_as, text};

/// A blank system disk in `dir`.
fn blank_disk(dir: &Path) -> PathBuf {
    let path = dir.join("system.raw");
    slate_tests::qemu::blank_disk(&path).unwrap();
    path
}

/// `slatectl config new --roles os:reader` as the admin: a reader's client
/// config in `dir`.
fn mint_reader(admin_config: &Path, node: &str, dir: &Path) -> PathBuf {
    let reader = dir.join("reader.slateconfig");
    let out = slatectl_as(
        admin_config,
        node,
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
    reader
}

/// The admin TLS identity of context `name` in `dir`'s slateconfig.
fn admin(dir: &Path, name: &str) -> Arc<rustls::ClientConfig> {
    let client = slate_config::clientconfig::ClientConfig::load(&dir.join("slateconfig")).unwrap();
    api::context_tls(&client, name).unwrap()
}

fn start(a: &Artifacts, disk: &Path, dir: &Path, name: &str) -> Vm {
    let mut opts = VmOptions::new(Boot::kernel(a));
    opts.system_disk = Some(disk.to_owned());
    Vm::start(&opts, Some(&dir.join(name))).expect("starting QEMU")
}

#[tokio::test]
#[ignore = "boots QEMU: run by `make test`"]
async fn maintenance_apply_config_and_state_across_reboot() {
    let a = Artifacts::find().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    gen_config("life", d);
    let cp = d.join("controlplane.yaml");
    let client = d.join("slateconfig");
    let disk = blank_disk(d);

    // 1. No config anywhere: maintenance mode, reachable without certificates.
    let mut vm = start(&a, &disk, d, "console-1.log");
    let insecure = Arc::new(tls::client_insecure().unwrap());
    let v = api::wait_for_version(&mut vm, insecure.clone(), BOOT_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(v.maintenance, "console:\n{}", vm.console_tail(80));
    assert!(
        console::find_line(&vm.console, "maintenance-mode certificate fingerprint").is_some(),
        "the console shows the fingerprint:\n{}",
        vm.console_tail(80)
    );
    let node = vm.endpoint();

    // Links can be listed without a certificate, to see what to configure.
    let out = slatectl(&["-n", &node, "--insecure", "get", "links", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        links
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["name"] == "eth0" && l["up"] == true),
        "{links}"
    );

    // A broken config is refused with its problems; the node stays in maintenance.
    let bad = d.join("bad.yaml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&cp)
            .unwrap()
            .replace("https://127.0.0.1:6443", "http://nowhere"),
    )
    .unwrap();
    let out = slatectl(&[
        "-n",
        &node,
        "--insecure",
        "apply-config",
        "-f",
        bad.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("cluster.controlPlane.endpoint"),
        "{}",
        text(&out)
    );

    // 2. apply-config --insecure: configured, and STATE is made on the blank disk.
    let out = slatectl(&[
        "-n",
        &node,
        "--insecure",
        "apply-config",
        "-f",
        cp.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}\nconsole:\n{}",
        text(&out),
        vm.console_tail(80)
    );
    assert!(
        text(&out).contains("first config: applied live"),
        "{}",
        text(&out)
    );
    let target = slate_client::parse_target(&node).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = slatectl_as(&client, &node, &["version"]);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "admin never served; console:\n{}",
            vm.console_tail(80)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        api::version(&target, insecure.clone()).await.is_err(),
        "insecure clients must be refused once configured"
    );
    assert!(
        console::find_line(&vm.console, "creating the STATE partition on /dev/vda").is_some()
            && console::find_line(&vm.console, "STATE mounted").is_some()
            && console::find_line(&vm.console, "creating the EPHEMERAL partition on /dev/vda")
                .is_some()
            && console::find_line(&vm.console, "/var moves onto it at the next boot").is_some(),
        "console:\n{}",
        vm.console_tail(80)
    );

    // The node's addresses and routes, as a table.
    let out = slatectl_as(&client, &node, &["get", "addresses"]);
    assert!(out.status.success(), "{}", text(&out));
    let table = text(&out);
    assert!(
        table.starts_with("NODE") && table.contains("ADDRESS"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains("eth0") && l.contains("10.0.2.15/24")),
        "{table}"
    );
    let out = slatectl_as(&client, &node, &["get", "routes", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let routes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        routes
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["destination"] == "0.0.0.0/0"
                && r["gateway"] == "10.0.2.2"
                && r["protocol"] == "dhcp"),
        "{routes}"
    );

    // No time servers configured: not synced, and the status says why.
    let out = slatectl_as(&client, &node, &["get", "timestatus", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let time: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(time[0]["synced"], false, "{time}");
    assert_eq!(
        time[0]["error"], "no time servers: set machine.time.servers",
        "{time}"
    );

    // 3. Roles: a minted reader may read but not reboot.
    let reader = mint_reader(&client, &node, d);
    let out = slatectl_as(&reader, &node, &["version"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = slatectl_as(&reader, &node, &["reboot"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("permission denied"), "{}", text(&out));
    let out = slatectl_as(&reader, &node, &["get", "machineconfig"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("<redacted>"), "{}", text(&out));

    // A config with errors is refused with its messages; the old one keeps running.
    let out = slatectl_as(
        &client,
        &node,
        &["apply-config", "-f", bad.to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("cluster.controlPlane.endpoint"),
        "{}",
        text(&out)
    );

    // try: applied live, rolled back when not confirmed in time.
    let trial = d.join("trial.yaml");
    let out = slatectl(&[
        "machineconfig",
        "patch",
        cp.to_str().unwrap(),
        "--patch",
        "machine: {certSANs: [trial.example]}",
        "-o",
        trial.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let shows_trial = || {
        let out = slatectl_as(&client, &node, &["get", "machineconfig"]);
        assert!(out.status.success(), "{}", text(&out));
        text(&out).contains("trial.example")
    };
    let out = slatectl_as(
        &client,
        &node,
        &[
            "apply-config",
            "-f",
            trial.to_str().unwrap(),
            "--mode",
            "try",
            "--timeout",
            "3s",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("~ machine.certSANs"), "{}", text(&out));
    assert!(shows_trial(), "the try config runs");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !shows_trial(),
        "rolled back after 3 s; console:\n{}",
        vm.console_tail(40)
    );

    // 4. Reboot in order; QEMU runs with -no-reboot, so the VM ends.
    let out = slatectl_as(&client, &node, &["reboot"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        vm.wait_for_exit(Instant::now() + Duration::from_secs(60))
            .await,
        "the node did not go down; console:\n{}",
        vm.console_tail(80)
    );
    drop(vm);

    // 5. Booted again, without any config drive: the config comes from STATE.
    let mut vm = start(&a, &disk, d, "console-2.log");
    let admin = admin(d, "life");
    let v = api::wait_for_version(&mut vm, admin, BOOT_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(!v.maintenance);
    let node = vm.endpoint();
    let out = slatectl_as(&client, &node, &["get", "machineconfig", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["source"], "state", "{doc}");
    assert_eq!(doc["config"]["cluster"]["name"], "life");
    assert_eq!(doc["config"]["machine"]["token"], "<redacted>");
    // The second boot puts /var on the disk, before any service starts.
    assert!(
        console::find_line(&vm.console, "EPHEMERAL (/dev/vda6) mounted on /var").is_some(),
        "console:\n{}",
        vm.console_tail(60)
    );
}

/// A small HTTP server on the host's loopback that QEMU's user network
/// shows the guest as 10.0.2.2: the first request gets 503 (the node must
/// retry), the next ones the config. Returns the port and a request counter.
async fn serve_config(body: String) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let served = Arc::clone(&count);
    tokio::spawn(async move {
        // Bounded: the test makes a handful of requests at most.
        for _ in 0..20 {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf).await;
            let n = served.fetch_add(1, Ordering::SeqCst);
            let reply = if n == 0 {
                "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_owned()
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
            };
            let _ = s.write_all(reply.as_bytes()).await;
        }
    });
    (port, count)
}

#[tokio::test]
#[ignore = "boots QEMU: run by `make test`"]
async fn config_from_a_url_on_the_kernel_command_line() {
    let a = Artifacts::find().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    gen_config("net", d);
    let (port, requests) =
        serve_config(std::fs::read_to_string(d.join("controlplane.yaml")).unwrap()).await;
    let mut opts = VmOptions::new(Boot::kernel(&a));
    opts.extra_cmdline = Some(format!(
        "slate.config=http://10.0.2.2:{port}/controlplane.yaml"
    ));
    let mut vm = Vm::start(&opts, Some(&d.join("console.log"))).unwrap();
    let admin = admin(d, "net");
    let v = api::wait_for_version(&mut vm, admin, BOOT_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(!v.maintenance, "{}", v.maintenance_reason);
    assert!(
        requests.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "the 503 was retried"
    );
    assert!(
        console::find_line(&vm.console, "(attempt 1)").is_some_and(|l| l.contains("503")),
        "the failed attempt is on the console:\n{}",
        vm.console_tail(40)
    );
    let out = slatectl_as(
        &d.join("slateconfig"),
        &vm.endpoint(),
        &["get", "machineconfig", "-o", "json"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["source"], "url");
}

/// The extension layer's containerd, run by machined's supervisor, seen
/// and driven with slatectl as a user would: `services`, `service ID`,
/// `logs`, `dmesg`; a restart by an admin, refused to a reader.
#[tokio::test]
#[ignore = "boots QEMU: run by `make test`"]
async fn containerd_runs_as_a_service_with_logs_and_a_restart() {
    let a = Artifacts::find().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    gen_config("svc", d);
    let drive = d.join("cidata.iso");
    let user_data = std::fs::read_to_string(d.join("controlplane.yaml")).unwrap();
    slate_tests::configdrive::build(&user_data, &drive).unwrap();
    let mut opts = VmOptions::new(Boot::kernel_with_extensions(&a).unwrap());
    opts.config_drive = Some(drive);
    let mut vm = Vm::start(&opts, Some(&d.join("console.log"))).expect("starting QEMU");
    api::wait_for_version(&mut vm, admin(d, "svc"), BOOT_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let client = d.join("slateconfig");
    let node = vm.endpoint();

    // containerd comes up and its socket answers (healthy).
    let services = || {
        let out = slatectl_as(&client, &node, &["services", "-o", "json"]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let containerd = loop {
        let all = services();
        let c = all
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == "containerd")
            .cloned();
        if let Some(c) = c.filter(|c| c["state"] == "Running" && c["health"] == "healthy") {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "containerd not healthy: {all}\n{}",
            vm.console_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let pid = containerd["pid"].as_u64().unwrap();
    assert!(pid > 1, "{containerd}");

    let out = slatectl_as(&client, &node, &["service", "containerd"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("started, pid"), "{}", text(&out));
    let out = slatectl_as(&client, &node, &["logs", "containerd", "--tail", "50"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("containerd successfully booted"),
        "{}",
        text(&out)
    );
    let out = slatectl_as(&client, &node, &["dmesg", "--tail", "5"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        5,
        "{}",
        text(&out)
    );
    // containerd answers its API through machined: no containers yet
    // (no images can be pulled here), but the call goes all the way.
    let out = slatectl_as(&client, &node, &["containers", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "[]",
        "{}",
        text(&out)
    );

    // A reader may look but not restart.
    let reader = mint_reader(&client, &node, d);
    let out = slatectl_as(&reader, &node, &["services"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = slatectl_as(&reader, &node, &["service", "containerd", "restart"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("permission denied"), "{}", text(&out));

    // The admin restarts it: a new process, healthy again.
    let out = slatectl_as(&client, &node, &["service", "containerd", "restart"]);
    assert!(out.status.success(), "{}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let all = services();
        let c = all
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == "containerd")
            .cloned()
            .unwrap();
        if c["state"] == "Running" && c["health"] == "healthy" && c["pid"].as_u64() != Some(pid) {
            break;
        }
        assert!(Instant::now() < deadline, "not restarted: {c}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
