//! slatectl as a user runs it: the built binary, its exit codes and what it
//! prints, against a real apid on loopback.

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
    assert!(gen_config(dir.path()).status.success());

    // A real apid on a free loopback port with the generated control-plane config.
    let state = dir.path().join("run");
    std::fs::create_dir(&state).unwrap();
    // Published as machined does: validated, as JSON.
    let yaml = std::fs::read_to_string(dir.path().join("controlplane.yaml")).unwrap();
    let config = slate_machinery::config::MachineConfig::parse(&yaml, "controlplane.yaml").unwrap();
    std::fs::write(state.join("config.json"), config.to_json().unwrap()).unwrap();
    std::fs::write(state.join("network.ready"), "lo 127.0.0.1/8 static\n").unwrap();
    let paths = slate_apid::Paths {
        config: state.join("config.json"),
        config_error: state.join("config.error"),
        network_ready: state.join("network.ready"),
    };
    // apid runs on its own thread with its own runtime, as in the node;
    // the thread ends with the test process.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap().to_string()).unwrap();
            let _ = slate_apid::serve(paths, listener).await;
        });
    });
    let node = rx.recv().unwrap();

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
