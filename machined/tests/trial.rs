//! A `try` survives a restart of machined: init restarts it with the
//! trial config still running, and the config still rolls back on time,
//! or stays once confirmed. Each machined runs in a runtime of its own,
//! dropped to stop it as a kill would (its timers die with it). And the
//! restart itself: a socket server that fails ends machined's `serve`.
// Test code outside #[test] fns: a panic here fails the test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use slate_config::MachineConfig;
use slate_machined::node::{Node, Storage};
use slate_machined::power::Power;
use slate_machined::state::State;
use slate_machined::{Paths, boot};
use slate_proto::machine::ApplyMode;

struct Setup {
    dir: tempfile::TempDir,
    paths: Paths,
    state: State,
    trial: MachineConfig,
}

fn setup() -> Setup {
    let config = slate_config::generate::generate(&slate_config::generate::Options {
        cluster_name: "trial".into(),
        endpoint: "https://10.0.0.1:6443".into(),
        ..Default::default()
    })
    .unwrap()
    .worker;
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(dir.path());
    let state_dir = dir.path().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    let state = State::new(&state_dir);
    state.save(&config).unwrap();
    let mut trial = config;
    trial.machine.network.hostname = Some("on-trial".into());
    Setup {
        dir,
        paths,
        state,
        trial,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn machined(s: &Setup) -> std::sync::Arc<Node> {
    boot(
        &s.paths,
        Storage::Fixed(Some(s.state.clone())),
        Ok(Some(s.state.clone())),
        Power::Record(Default::default()),
    )
    .await
}

fn published_hostname(paths: &Paths) -> Option<String> {
    let text = std::fs::read_to_string(&paths.config).unwrap();
    MachineConfig::from_json(&text, "published")
        .unwrap()
        .machine
        .network
        .hostname
}

/// Boots, applies the trial config in try mode (2 s), then "kills" machined.
fn start_a_try(s: &Setup) {
    runtime().block_on(async {
        let node = machined(s).await;
        let yaml = s.trial.to_yaml().unwrap();
        node.apply(
            yaml.as_bytes(),
            ApplyMode::Try,
            false,
            Some(Duration::from_secs(2)),
            false,
        )
        .await
        .unwrap();
        assert_eq!(published_hostname(&s.paths).as_deref(), Some("on-trial"));
    });
}

#[test]
fn a_try_rolls_back_on_time_after_machined_restarts() {
    let s = setup();
    start_a_try(&s);
    runtime().block_on(async {
        let _node = machined(&s).await;
        // Restarted: still on trial, not yet rolled back.
        assert_eq!(published_hostname(&s.paths).as_deref(), Some("on-trial"));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(
            published_hostname(&s.paths),
            None,
            "the try config outlived its timeout across a restart"
        );
        assert!(!s.paths.try_record.exists());
    });
    let _ = &s.dir;
}

#[test]
fn a_try_confirmed_after_machined_restarts_stays() {
    let s = setup();
    start_a_try(&s);
    runtime().block_on(async {
        let node = machined(&s).await;
        let yaml = s.trial.to_yaml().unwrap();
        node.apply(yaml.as_bytes(), ApplyMode::NoReboot, false, None, false)
            .await
            .unwrap();
        assert!(!s.paths.try_record.exists());
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(published_hostname(&s.paths).as_deref(), Some("on-trial"));
    });
}

#[test]
fn the_try_record_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let s = setup();
    start_a_try(&s);
    let mode = std::fs::metadata(&s.paths.try_record)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "it holds the node's secrets");
}

/// machined's socket server failing (here: its directory is gone) ends
/// `serve` with an error naming the socket, on which machined exits for
/// init to restart it, instead of pausing forever without an API.
#[test]
fn serve_fails_when_its_socket_cannot_be_served() {
    let s = setup();
    let rt = runtime();
    let node = rt.block_on(machined(&s));
    let mut paths = s.paths.clone();
    paths.socket = s.dir.path().join("gone").join("machined.sock");
    let services = slate_machined::services::Supervisor::new(s.dir.path().join("cgroup"), None);
    let served = rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(10),
            slate_machined::serve(&paths, slate_machined::Served::new(node, services)),
        )
        .await
    });
    let err = served
        .expect("serve returned instead of hanging")
        .expect_err("serve reported failure");
    assert!(format!("{err:#}").contains("gone/machined.sock"), "{err:#}");
}
