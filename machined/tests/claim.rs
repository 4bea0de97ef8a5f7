//! A node whose disk holds Slate state never becomes claimable: when
//! STATE does not mount, or holds configs of which none loads, machined
//! refuses an anonymous apply-config (the maintenance-mode path) instead of
//! taking the first config anyone sends, and says why where
//! `slatectl version --insecure` and the console show it.
// Test code outside #[test] fns: a panic here fails the test.
#![allow(clippy::unwrap_used)]

use slate_machined::node::Storage;
use slate_machined::power::Power;
use slate_machined::state::State;
use slate_machined::{Paths, boot};
use slate_proto::machine::ApplyMode;

fn worker_yaml() -> String {
    slate_config::generate::generate(&slate_config::generate::Options {
        cluster_name: "intruder".into(),
        endpoint: "https://10.0.0.1:6443".into(),
        ..Default::default()
    })
    .unwrap()
    .worker
    .to_yaml()
    .unwrap()
}

#[tokio::test]
async fn state_whose_configs_do_not_load_refuses_an_anonymous_config() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(dir.path());
    let state_dir = dir.path().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    // Torn, then bit-flipped: neither the current nor the previous loads.
    std::fs::write(
        state_dir.join("config.yaml"),
        "version: v1alpha1\nmachine: [\n",
    )
    .unwrap();
    std::fs::write(state_dir.join("config.prev.yaml"), "\u{0}\u{0}garbage").unwrap();
    let state = State::new(&state_dir);
    let node = boot(
        &paths,
        Storage::Fixed(Some(state.clone())),
        Ok(Some(state)),
        Power::Record(Default::default()),
    )
    .await;

    let reason = std::fs::read_to_string(&paths.config_error).unwrap();
    assert!(reason.contains("STATE holds a machine config"), "{reason}");
    assert!(reason.contains("refuses apply-config"), "{reason}");
    assert!(!paths.config.exists(), "no config may be published");

    let err = node
        .apply(worker_yaml().as_bytes(), ApplyMode::Auto, false, None, true)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    assert!(err.message().contains("client certificate"), "{err}");
    assert_eq!(
        std::fs::read_to_string(state_dir.join("config.yaml")).unwrap(),
        "version: v1alpha1\nmachine: [\n",
        "STATE must not be overwritten"
    );
    assert!(node.configs().await.0.is_none());
}

#[tokio::test]
async fn state_that_does_not_mount_refuses_an_anonymous_config() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(dir.path());
    let node = boot(
        &paths,
        Storage::Fixed(None),
        Err("mounting STATE (/dev/vda3): EUCLEAN".into()),
        Power::Record(Default::default()),
    )
    .await;
    let reason = std::fs::read_to_string(&paths.config_error).unwrap();
    assert!(
        reason.starts_with("mounting STATE (/dev/vda3): EUCLEAN: this node refuses"),
        "{reason}"
    );
    let err = node
        .apply(worker_yaml().as_bytes(), ApplyMode::Auto, false, None, true)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
}
