//! slatectl as a user runs it: the built binary, its exit codes and what it
//! prints, against a real apid on loopback.
// Test helpers outside #[test] fns: a panic here fails the test that called it.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

fn slatectl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_slatectl"))
        .args(args)
        .env_remove("SLATECONFIG")
        .output()
        .expect("running slatectl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// slatectl failed, and its error names `needle` (the bad input, the file).
fn assert_fails_naming(out: &Output, needle: &str) {
    let err = text(&out.stderr);
    assert!(!out.status.success(), "should have failed; stderr: {err}");
    assert!(
        err.contains(needle),
        "error does not name {needle:?}: {err}"
    );
}

fn gen_config(dir: &Path) -> Output {
    slatectl(&[
        "gen",
        "config",
        "demo",
        "https://127.0.0.1:6443",
        "-o",
        dir.to_str().unwrap(),
    ])
}

#[test]
fn gen_config_writes_private_files_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = gen_config(dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    for name in ["controlplane.yaml", "worker.yaml", "slateconfig"] {
        let meta = std::fs::metadata(dir.path().join(name)).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "{name} holds keys"
        );
    }
    let before = std::fs::read(dir.path().join("slateconfig")).unwrap();

    let again = gen_config(dir.path());
    assert_fails_naming(&again, "--force");
    assert_eq!(
        std::fs::read(dir.path().join("slateconfig")).unwrap(),
        before,
        "nothing overwritten"
    );
}

#[test]
fn bad_inputs_name_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let out = slatectl(&[
        "gen",
        "config",
        "Bad_Name",
        "https://127.0.0.1:6443",
        "-o",
        dir.path().to_str().unwrap(),
    ]);
    assert_fails_naming(&out, "Bad_Name");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing half-written"
    );

    let missing = dir.path().join("nope");
    let out = slatectl(&["--config", missing.to_str().unwrap(), "version"]);
    assert_fails_naming(&out, missing.to_str().unwrap());

    let broken = dir.path().join("broken");
    std::fs::write(&broken, "context: x\ncontexts:\n  x: [\n").unwrap();
    let out = slatectl(&["--config", broken.to_str().unwrap(), "version"]);
    assert_fails_naming(&out, "broken: line ");

    let out = slatectl(&["--insecure", "-n", "host:99999", "version"]);
    assert_fails_naming(&out, "host:99999");
}

#[test]
fn version_shows_the_client_and_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = configured_apid(dir.path());

    let config = dir.path().join("slateconfig");
    let out = slatectl(&[
        "--config",
        config.to_str().unwrap(),
        "-n",
        &node,
        "version",
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["node"], "(client)");
    assert_eq!(rows[1]["node"], node.as_str());
    assert_eq!(rows[1]["tag"], env!("CARGO_PKG_VERSION"));
    assert!(rows[1]["kernel"].as_str().is_some_and(|k| !k.is_empty()));

    let table = slatectl(&["--config", config.to_str().unwrap(), "-n", &node, "version"]);
    let table = text(&table.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NODE") && lines[0].contains("KERNEL"),
        "{table}"
    );
    assert!(lines[2].starts_with(&node), "{table}");

    // A node that is not there: a clear error naming it, exit code 1.
    let out = slatectl(&[
        "--config",
        config.to_str().unwrap(),
        "-n",
        "127.0.0.1:1",
        "version",
    ]);
    assert_fails_naming(&out, "127.0.0.1:1");
}

#[test]
fn validate_reports_every_problem_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    assert!(gen_config(dir.path()).status.success());
    let good = dir.path().join("worker.yaml");
    let out = slatectl(&["validate", "-f", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("is valid for cloud mode"));

    // Bare metal needs an install disk.
    let out = slatectl(&["validate", "-f", good.to_str().unwrap(), "--mode", "metal"]);
    assert_fails_naming(&out, "machine.install.disk: is required on bare metal");

    // Two wrong values: both reported, each with path, line and column.
    let yaml = std::fs::read_to_string(&good).unwrap();
    let broken = yaml
        .replace("dnsDomain: cluster.local", "dnsDomain: -bad-")
        .replace("- 10.244.0.0/16", "- 10.244.0.300/16");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, &broken).unwrap();
    let out = slatectl(&["validate", "-f", bad.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("2 problems"), "{err}");
    let line_of = |needle: &str| broken.lines().position(|l| l.contains(needle)).unwrap() + 1;
    assert!(
        err.contains(&format!(
            "cluster.network.podSubnets[0]: \"10.244.0.300/16\" is not a CIDR (line {}, col 7)",
            line_of("10.244.0.300/16")
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "cluster.network.dnsDomain: \"-bad-\" is not a DNS domain (line {}",
            line_of("-bad-")
        )),
        "{err}"
    );

    // Binary junk and missing files are named.
    std::fs::write(&bad, [0xff, 0x00, 0xfe]).unwrap();
    assert_fails_naming(
        &slatectl(&["validate", "-f", bad.to_str().unwrap()]),
        "not a text file",
    );
    assert_fails_naming(
        &slatectl(&["validate", "-f", "/nonexistent.yaml"]),
        "/nonexistent.yaml",
    );
}

#[test]
fn configs_made_later_from_saved_secrets_join_the_same_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets.yaml");
    let out = slatectl(&["gen", "secrets", "-o", secrets.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::metadata(&secrets).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let gen_with_secrets = |sub: &str| {
        let out_dir = dir.path().join(sub);
        let out = slatectl(&[
            "gen",
            "config",
            "demo",
            "https://10.0.0.1:6443",
            "--with-secrets",
            secrets.to_str().unwrap(),
            "-o",
            out_dir.to_str().unwrap(),
        ]);
        (out, out_dir)
    };
    let make = |sub: &str| {
        let (out, out_dir) = gen_with_secrets(sub);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let yaml = std::fs::read_to_string(out_dir.join("worker.yaml")).unwrap();
        slate_config::MachineConfig::parse(&yaml, "worker.yaml").unwrap()
    };
    let (a, b) = (make("a"), make("b"));
    assert_eq!(a.machine.ca, b.machine.ca);
    assert_eq!(a.machine.token, b.machine.token);
    assert_eq!(a.cluster.secret, b.cluster.secret);

    std::fs::write(&secrets, "cluster: {}\n").unwrap();
    let (out, _) = gen_with_secrets("c");
    assert_fails_naming(&out, "secrets.yaml: line 1");
}

#[test]
fn patches_merge_or_apply_rfc6902_and_bad_ones_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let patch = dir.path().join("net.yaml");
    std::fs::write(
        &patch,
        "machine:\n  network:\n    interfaces:\n      - interface: eth0\n        addresses: [10.0.0.5/24]\n",
    )
    .unwrap();
    let out = slatectl(&[
        "gen",
        "config",
        "demo",
        "https://10.0.0.1:6443",
        "--config-patch",
        &format!("@{}", patch.display()),
        "--config-patch-worker",
        r#"[{"op": "add", "path": "/machine/certSANs", "value": ["w.example"]}]"#,
        "-o",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let read = |name: &str| {
        let yaml = std::fs::read_to_string(dir.path().join(name)).unwrap();
        slate_config::MachineConfig::parse(&yaml, name).unwrap()
    };
    let (cp, worker) = (read("controlplane.yaml"), read("worker.yaml"));
    assert_eq!(cp.machine.network.interfaces[0].addresses, ["10.0.0.5/24"]);
    assert_eq!(
        worker.machine.network.interfaces[0].addresses,
        ["10.0.0.5/24"]
    );
    assert_eq!(worker.machine.cert_sans, ["w.example"]);
    assert!(cp.machine.cert_sans.is_empty());

    // machineconfig patch: a merge that adds a second address to eth0.
    let worker_file = dir.path().join("worker.yaml");
    let before = std::fs::read(&worker_file).unwrap();
    let out = slatectl(&[
        "machineconfig",
        "patch",
        worker_file.to_str().unwrap(),
        "--patch",
        "machine: {network: {interfaces: [{interface: eth0, addresses: [10.0.0.6/24]}]}}",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let patched = slate_config::MachineConfig::parse(&text(&out.stdout), "stdout").unwrap();
    assert_eq!(
        patched.machine.network.interfaces[0].addresses,
        ["10.0.0.5/24", "10.0.0.6/24"]
    );

    // A patch that makes the config invalid names the field; the file is untouched.
    let out = slatectl(&[
        "machineconfig",
        "patch",
        worker_file.to_str().unwrap(),
        "--patch",
        "machine: {network: {interfaces: [{interface: eth0, mtu: 9}]}}",
        "-o",
        worker_file.to_str().unwrap(),
    ]);
    assert_fails_naming(&out, "machine.network.interfaces[0].mtu: 9 is not an MTU");
    assert_eq!(std::fs::read(&worker_file).unwrap(), before);
}

/// `gen config` into `dir`, then a real machined (which signs apid's
/// certificate) and apid on a free loopback port with the control-plane
/// config on machined's STATE; returns apid's address.
fn configured_apid(dir: &Path) -> String {
    assert!(gen_config(dir).status.success());
    let state = dir.join("run");
    std::fs::create_dir(&state).unwrap();
    let yaml = std::fs::read_to_string(dir.join("controlplane.yaml")).unwrap();
    let config = slate_config::MachineConfig::parse(&yaml, "controlplane.yaml").unwrap();
    spawn_node(&state, Some(config))
}

/// machined and apid, apid on a free loopback port, each as on a node, on
/// their own thread with its own runtime, with their files in `state`;
/// `config` on STATE, or maintenance mode. Returns apid's address.
fn spawn_node(state: &Path, config: Option<slate_config::MachineConfig>) -> String {
    use slate_machined::node::{Node, Source, Storage};
    use slate_machined::publish::Verdict;
    std::fs::write(state.join("network.ready"), "lo 127.0.0.1/8 static\n").unwrap();
    let machined_paths = slate_machined::Paths::under(state);
    let paths = slate_apid::Paths {
        api_view: machined_paths.api_view.clone(),
        config_error: machined_paths.config_error.clone(),
        network_ready: state.join("network.ready"),
        machined_socket: machined_paths.socket.clone(),
        networkd_socket: state.join("networkd.sock"),
    };
    let disk = slate_machined::state::State::new(state.join("state"));
    std::fs::create_dir(state.join("state")).unwrap();
    let cgroups = state.join("cgroups");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let node = Node::new(
                machined_paths.clone(),
                Storage::Fixed(Some(disk.clone())),
                None,
                slate_machined::power::Power::Record(Default::default()),
            );
            match config {
                Some(config) => {
                    disk.save(&config).unwrap();
                    node.boot(Verdict::valid(config), Source::State).await;
                }
                None => node.boot(Verdict::Missing, Source::ConfigDrive).await,
            }
            let services = slate_machined::services::Supervisor::new(cgroups, None);
            tokio::spawn(async move {
                slate_machined::serve(&machined_paths, slate_machined::Served::new(node, services))
                    .await
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap().to_string()).unwrap();
            let _ = slate_apid::serve(paths, listener).await;
        });
    });
    rx.recv().unwrap()
}

/// The SHA-256 fingerprint of the certificate `node` serves, read by
/// OpenSSL as a person would (`openssl s_client | openssl x509`).
fn fingerprint_by_openssl(node: &str) -> String {
    for _ in 0..50 {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "openssl s_client -connect {node} -alpn h2 </dev/null 2>/dev/null \
                 | openssl x509 -noout -fingerprint -sha256"
            ))
            .output()
            .expect("running openssl (make deps installs it)");
        let text = text(&out.stdout);
        if let Some(fp) = text.trim().strip_prefix("sha256 Fingerprint=") {
            return fp.to_owned();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("openssl could not read the certificate of {node}");
}

#[test]
fn insecure_calls_pinned_to_the_console_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("run");
    std::fs::create_dir(&state).unwrap();
    // Maintenance mode: no config anywhere.
    let node = spawn_node(&state, None);
    let right = fingerprint_by_openssl(&node);

    let out = slatectl(&[
        "--insecure",
        "--cert-fingerprint",
        &right,
        "-n",
        &node,
        "version",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&node), "{}", text(&out.stdout));
    // Lower case without colons is the same fingerprint.
    let bare = right.replace(':', "").to_lowercase();
    let out = slatectl(&[
        "--insecure",
        "--cert-fingerprint",
        &bare,
        "-n",
        &node,
        "version",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Someone else's certificate: refused, nothing sent.
    let mut wrong = right.clone();
    wrong.replace_range(0..2, if right.starts_with("00") { "11" } else { "00" });
    let out = slatectl(&[
        "--insecure",
        "--cert-fingerprint",
        &wrong,
        "-n",
        &node,
        "version",
    ]);
    assert_fails_naming(&out, "fingerprint");
    assert_fails_naming(&out, &right);

    let out = slatectl(&[
        "--insecure",
        "--cert-fingerprint",
        "AB:CD",
        "-n",
        &node,
        "version",
    ]);
    assert_fails_naming(&out, "--cert-fingerprint");
    let out = slatectl(&["--cert-fingerprint", &right, "-n", &node, "version"]);
    assert_fails_naming(&out, "--insecure");

    // apply-config --insecure without a pin says loudly what it risks.
    let config = dir.path().join("worker.yaml");
    std::fs::write(&config, "version: v1alpha1\n").unwrap();
    let out = slatectl(&[
        "--insecure",
        "-n",
        &node,
        "apply-config",
        "-f",
        config.to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(
        text(&out.stderr).contains("WARNING: --insecure without --cert-fingerprint"),
        "{}",
        text(&out.stderr)
    );
}

/// Python's grpcio, with the client config as `gen config` writes it,
/// reaches apid: the keys are PKCS#8 v1, which BoringSSL reads.
#[test]
fn python_grpcio_calls_the_api_with_the_generated_client_config() {
    let python = std::env::var("SLATE_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import grpc, yaml"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        slate_testskip::skip(
            "python_grpcio_calls_the_api_with_the_generated_client_config",
            slate_testskip::Reason::Tool("python3-grpcio and python3-yaml"),
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = configured_apid(dir.path());

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/version.py");
    let slateconfig = dir.path().join("slateconfig");
    let out = Command::new(&python)
        .args([script, slateconfig.to_str().unwrap(), &node])
        .output()
        .unwrap();
    assert!(out.status.success(), "python: {}", text(&out.stderr));
    let hex = text(&out.stdout);
    let bytes: Vec<u8> = (0..hex.trim().len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex.trim()[i..i + 2], 16).unwrap())
        .collect();
    let reply =
        <slate_proto::machine::VersionResponse as prost::Message>::decode(&bytes[..]).unwrap();
    assert_eq!(reply.tag, env!("CARGO_PKG_VERSION"));
    assert!(!reply.kernel.is_empty(), "{reply:?}");
}

/// `config contexts|context|info|endpoint|node|merge` edit the client
/// config in place, as talosctl's do; bad input is refused by name and
/// leaves the file as it was.
#[test]
fn client_config_contexts_are_listed_switched_edited_and_merged() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    assert!(gen_config(a.path()).status.success());
    let out = slatectl(&[
        "gen",
        "config",
        "other",
        "https://10.0.0.9:6443",
        "-o",
        b.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config = a.path().join("slateconfig");
    let cfg = config.to_str().unwrap();

    let out = slatectl(&["--config", cfg, "config", "contexts"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    assert!(
        listed.contains("CURRENT") && listed.contains("*") && listed.contains("demo"),
        "{listed}"
    );
    assert!(listed.contains("os:admin"), "{listed}");

    let merged = b.path().join("slateconfig");
    let out = slatectl(&["--config", cfg, "config", "merge", merged.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Merging again adds the same context under a new name.
    let out = slatectl(&["--config", cfg, "config", "merge", merged.to_str().unwrap()]);
    assert!(
        text(&out.stdout).contains("other-1"),
        "{}",
        text(&out.stdout)
    );
    let out = slatectl(&["--config", cfg, "config", "contexts", "-o", "json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["demo", "other", "other-1"]);
    assert!(
        rows[2]["current"].as_bool().unwrap(),
        "the merged file's context is current: {rows}"
    );

    let before = std::fs::read(&config).unwrap();
    assert_fails_naming(
        &slatectl(&["--config", cfg, "config", "context", "nope"]),
        "nope",
    );
    assert_fails_naming(
        &slatectl(&["--config", cfg, "config", "endpoint", "not a host"]),
        "not a host",
    );
    assert_eq!(
        std::fs::read(&config).unwrap(),
        before,
        "nothing written on a refusal"
    );

    assert!(
        slatectl(&["--config", cfg, "config", "context", "demo"])
            .status
            .success()
    );
    assert!(
        slatectl(&[
            "--config",
            cfg,
            "config",
            "endpoint",
            "10.0.0.1",
            "10.0.0.2:50001"
        ])
        .status
        .success()
    );
    assert!(
        slatectl(&["--config", cfg, "config", "node", "10.0.0.3"])
            .status
            .success()
    );
    let out = slatectl(&["--config", cfg, "config", "info", "-o", "json"]);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info[0]["name"], "demo");
    assert_eq!(
        info[0]["endpoints"],
        serde_json::json!(["10.0.0.1", "10.0.0.2:50001"])
    );
    assert_eq!(info[0]["nodes"], serde_json::json!(["10.0.0.3"]));
    assert_eq!(
        std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o600,
        "the file holds private keys"
    );
}

#[test]
fn completion_scripts_name_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = slatectl(&["completion", shell]);
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        for word in ["slatectl", "apply-config", "machines", "join-token"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    assert_fails_naming(&slatectl(&["completion", "tcsh"]), "tcsh");
}

/// `slatectl kubeconfig`: the node's admin kubeconfig, written, refused
/// over an existing file, merged into one (as kubectl reads it), and
/// refused to a reader.
#[test]
fn kubeconfig_is_written_merged_and_only_for_admins() {
    if let Some(why) = slate_testskip::unless_installed(&["kubectl"]) {
        slate_testskip::skip("kubeconfig_is_written_merged_and_only_for_admins", why);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = configured_apid(dir.path());
    let config = dir.path().join("slateconfig");
    let config = config.to_str().unwrap();
    let kubectl_view = |path: &Path| -> serde_json::Value {
        let out = Command::new("kubectl")
            .args(["config", "view", "--raw", "-o", "json", "--kubeconfig"])
            .arg(path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };

    let path = dir.path().join("kube").join("config");
    let out = slatectl(&[
        "--config",
        config,
        "-n",
        &node,
        "kubeconfig",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let view = kubectl_view(&path);
    assert_eq!(view["current-context"], "admin@demo");
    assert_eq!(
        view["clusters"][0]["cluster"]["server"],
        "https://127.0.0.1:6443"
    );

    // Its certificate is the cluster CA's, for system:masters.
    use base64::Engine as _;
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    };
    std::fs::write(
        dir.path().join("admin.crt"),
        b64(&view["users"][0]["user"]["client-certificate-data"]),
    )
    .unwrap();
    let cp = slate_config::MachineConfig::parse(
        &std::fs::read_to_string(dir.path().join("controlplane.yaml")).unwrap(),
        "controlplane.yaml",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("k8s-ca.crt"),
        cp.cluster.ca.crt_pem().unwrap(),
    )
    .unwrap();
    let verify = Command::new("openssl")
        .current_dir(dir.path())
        .args(["verify", "-CAfile", "k8s-ca.crt", "admin.crt"])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        text(&verify.stdout) + &text(&verify.stderr)
    );
    let subject = Command::new("openssl")
        .current_dir(dir.path())
        .args(["x509", "-in", "admin.crt", "-noout", "-subject"])
        .output()
        .unwrap();
    assert!(
        text(&subject.stdout).contains("O = system:masters"),
        "{}",
        text(&subject.stdout)
    );

    // The file exists: refused without --merge or --force, untouched.
    let before = std::fs::read(&path).unwrap();
    let out = slatectl(&[
        "--config",
        config,
        "-n",
        &node,
        "kubeconfig",
        path.to_str().unwrap(),
    ]);
    assert_fails_naming(&out, "exists: --merge");
    assert_eq!(std::fs::read(&path).unwrap(), before);

    // Merged into another cluster's kubeconfig: both, this one current.
    let other = dir.path().join("other");
    std::fs::write(
        &other,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: other\n  cluster:\n    server: https://other:6443\n\
         users:\n- name: me\n  user:\n    token: abc\ncontexts:\n- name: other\n  context:\n    cluster: other\n    user: me\n\
         current-context: other\n",
    )
    .unwrap();
    let out = slatectl(&[
        "--config",
        config,
        "-n",
        &node,
        "kubeconfig",
        "--merge",
        other.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let view = kubectl_view(&other);
    let names: Vec<&str> = view["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    // kubectl lists them by name.
    assert_eq!(names, ["admin@demo", "other"]);
    assert_eq!(view["current-context"], "admin@demo");

    // Garbage is not merged into, nor overwritten.
    std::fs::write(&other, "clusters: [").unwrap();
    let out = slatectl(&[
        "--config",
        config,
        "-n",
        &node,
        "kubeconfig",
        "--merge",
        other.to_str().unwrap(),
    ]);
    assert_fails_naming(&out, "not a kubeconfig, not merged");
    assert_eq!(std::fs::read_to_string(&other).unwrap(), "clusters: [");

    // A reader gets no kubeconfig.
    let reader = dir.path().join("reader");
    let out = slatectl(&[
        "--config",
        config,
        "-n",
        &node,
        "config",
        "new",
        "--roles",
        "os:reader",
        "-o",
        reader.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = slatectl(&[
        "--config",
        reader.to_str().unwrap(),
        "-n",
        &node,
        "kubeconfig",
        "-",
    ]);
    assert_fails_naming(&out, "os:admin");
}
