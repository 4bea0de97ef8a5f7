//! `slatectl containers` against a real containerd (Debian's, started
//! here with its own root, state and socket): a container created through
//! containerd's API is listed with its namespace, image and pod labels.
// Test helpers outside #[test] fns: a panic here fails the test that called it.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use containerd_client::services::v1::Container;
use containerd_client::services::v1::CreateContainerRequest;
use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::tonic::Request;

struct Containerd(Child);

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_containerd(dir: &Path) -> Option<Containerd> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/usr/bin/containerd").exists() {
        slate_testskip::skip(
            "containerd test",
            slate_testskip::Reason::Setup("needs root and Debian's containerd (make deps)"),
        );
        return None;
    }
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{0}/containerd.sock\"\n\
             [ttrpc]\n  address = \"{0}/containerd.sock.ttrpc\"\n",
            dir.display()
        ),
    )
    .unwrap();
    let child = Command::new("/usr/bin/containerd")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting containerd");
    Some(Containerd(child))
}

#[tokio::test]
async fn containers_created_through_containerd_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_containerd) = start_containerd(dir.path()) else {
        return;
    };
    let socket = dir.path().join("containerd.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "containerd never made its socket"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing yet.
    let listed = slate_machined::containers::list(&socket, "").await.unwrap();
    assert!(listed.is_empty(), "{listed:?}");

    // A container as kubelet's CRI makes one: in k8s.io, with pod labels.
    let channel = containerd_client::connect(&socket).await.unwrap();
    let labels = HashMap::from([
        ("io.kubernetes.pod.name".to_owned(), "web-7d4b9".to_owned()),
        (
            "io.kubernetes.container.name".to_owned(),
            "nginx".to_owned(),
        ),
    ]);
    let spec = prost_types::Any {
        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
        value: b"{}".to_vec(),
    };
    let mut request = Request::new(CreateContainerRequest {
        container: Some(Container {
            id: "web".into(),
            labels,
            image: "registry.example/nginx:1.27".into(),
            runtime: Some(Runtime {
                name: "io.containerd.runc.v2".into(),
                options: None,
            }),
            spec: Some(spec),
            ..Container::default()
        }),
    });
    request
        .metadata_mut()
        .insert("containerd-namespace", "k8s.io".parse().unwrap());
    ContainersClient::new(channel)
        .create(request)
        .await
        .expect("creating a container");

    let listed = slate_machined::containers::list(&socket, "").await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let c = &listed[0];
    assert_eq!(
        (c.namespace.as_str(), c.id.as_str(), c.image.as_str()),
        ("k8s.io", "web", "registry.example/nginx:1.27")
    );
    assert_eq!((c.pod.as_str(), c.name.as_str()), ("web-7d4b9", "nginx"));
    // No task: not running.
    assert_eq!((c.pid, c.status.as_str()), (0, ""));

    // A namespace filter.
    assert_eq!(
        slate_machined::containers::list(&socket, "k8s.io")
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        slate_machined::containers::list(&socket, "other")
            .await
            .unwrap()
            .is_empty()
    );
    // containerd gone: a clear error naming the socket, no hang.
    drop(_containerd);
    let err = slate_machined::containers::list(&socket, "")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("containerd.sock"), "{err}");
}
