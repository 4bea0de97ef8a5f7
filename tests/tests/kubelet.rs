//! The kubelet service as machined runs it, on the host with real cgroups
//! (root and cgroup2; skipped otherwise), against `kubelet-standin` (which
//! only answers /healthz: the real kubelet cannot be downloaded here). The
//! spec, its files, flags, checks and dependencies are the real ones.
// Test code outside #[test] fns: a panic here fails the test.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use slate_machined::services::kubelet::{self, KubeletPaths};
use slate_machined::services::{ServiceSpec, State, Supervisor, cgroup};

#[tokio::test]
async fn kubelet_waits_for_its_checks_writes_its_files_and_turns_healthy() {
    let Some(mount) =
        root_and_cgroup2("kubelet_waits_for_its_checks_writes_its_files_and_turns_healthy")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let paths = paths_under(d);
    std::fs::write(
        &paths.network_ready,
        "lo 127.0.0.1/8 static\neth0 10.0.2.15/24 dhcp\n",
    )
    .unwrap();
    std::fs::create_dir_all(paths.proc_sys.join("net/ipv4")).unwrap();
    std::fs::write(paths.proc_sys.join("net/ipv4/ip_forward"), "0").unwrap();
    std::fs::write(&paths.swaps, "Filename Type Size Used Priority\n").unwrap();
    let config = slate_config::generate::generate(&slate_config::generate::Options {
        cluster_name: "kube".into(),
        endpoint: "https://10.0.2.100:6443".into(),
        ..Default::default()
    })
    .unwrap()
    .worker;

    let cgroups = Cgroups(mount.join(format!("slate-kubelet-test-{}", std::process::id())));
    let sup = Supervisor::new(cgroups.0.clone(), None);
    let mut spec = kubelet::spec(
        Path::new(env!("CARGO_BIN_EXE_kubelet-standin")),
        &config,
        paths.clone(),
    );
    spec.restart.initial = Duration::from_millis(200);
    spec.restart.max = Duration::from_millis(400);
    sup.add(spec).unwrap();
    // Until containerd is up, kubelet waits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = sup.status("kubelet").unwrap();
    assert_eq!(s.state, State::Waiting, "{s:#?}");
    assert!(s.events[0].message.contains("service containerd"), "{s:#?}");
    sup.add(ServiceSpec::new("containerd", &["/bin/sleep", "1000"]))
        .unwrap();

    // br_netfilter missing: a clear failure, retried.
    let s = wait(&sup, |s| s.state == State::Failed).await;
    assert!(
        s.events.iter().any(|e| e.message == "preparing: br_netfilter is not loaded: pods' bridged traffic would bypass iptables"),
        "{s:#?}"
    );
    assert_eq!(
        std::fs::read_to_string(paths.proc_sys.join("net/ipv4/ip_forward")).unwrap(),
        "1"
    );
    std::fs::create_dir_all(paths.proc_sys.join("net/bridge")).unwrap();
    std::fs::write(
        paths.proc_sys.join("net/bridge/bridge-nf-call-iptables"),
        "1",
    )
    .unwrap();

    // Then it starts, and its health endpoint answers.
    let s = wait(&sup, |s| {
        s.state == State::Running && s.healthy == Some(true)
    })
    .await;
    assert!(s.pid.is_some());
    let config_yaml = std::fs::read_to_string(paths.config()).unwrap();
    for want in [
        "kind: KubeletConfiguration",
        "containerRuntimeEndpoint: unix:///run/containerd/containerd.sock",
        "cgroupDriver: cgroupfs",
        "healthzPort: 10248",
        "  - 10.96.0.10",
    ] {
        assert!(
            config_yaml.contains(want),
            "{want:?} not in:\n{config_yaml}"
        );
    }
    let kubeconfig = std::fs::read_to_string(paths.bootstrap_kubeconfig()).unwrap();
    assert!(
        kubeconfig.contains("server: https://10.0.2.100:6443"),
        "{kubeconfig}"
    );
    assert!(kubeconfig.contains(&format!("token: {}", config.machine.token)));
    let mode = std::fs::metadata(paths.bootstrap_kubeconfig())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the token file is root's only");
    assert!(
        std::fs::read_to_string(paths.ca())
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    let (lines, _) = sup.logs("kubelet").unwrap().tail_and_follow(None);
    let started = lines
        .iter()
        .find(|l| l.starts_with("kubelet-standin started with:"))
        .unwrap();
    assert!(started.contains("--node-ip=10.0.2.15"), "{started}");
    assert!(
        started.contains(&format!("--config={}", paths.config().display())),
        "{started}"
    );
    sup.stop_all(Duration::from_secs(10)).await;
}

/// On a control-plane node kubelet's start writes the control plane
/// first: the component secrets and three static pods in the directory
/// its config names, which kubelet (here the stand-in) is started with;
/// and it waits for the layer's image archives to be imported.
#[tokio::test]
async fn a_control_plane_kubelet_starts_with_the_control_planes_static_pods() {
    let Some(mount) =
        root_and_cgroup2("a_control_plane_kubelet_starts_with_the_control_planes_static_pods")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let paths = paths_under(d);
    ready_node(&paths);
    let config = slate_config::generate::generate(&slate_config::generate::Options {
        cluster_name: "kube".into(),
        endpoint: "https://10.0.2.100:6443".into(),
        ..Default::default()
    })
    .unwrap()
    .controlplane;

    // An image archive in the layer, not imported yet.
    std::fs::create_dir_all(&paths.image_archives).unwrap();
    std::fs::write(paths.image_archives.join("pause.tar"), "").unwrap();

    let cgroups = Cgroups(mount.join(format!("slate-kubelet-cp-test-{}", std::process::id())));
    let sup = Supervisor::new(cgroups.0.clone(), None);
    sup.add(ServiceSpec::new("containerd", &["/bin/sleep", "1000"]))
        .unwrap();
    sup.add(kubelet::spec(
        Path::new(env!("CARGO_BIN_EXE_kubelet-standin")),
        &config,
        paths.clone(),
    ))
    .unwrap();
    // kubelet waits for the import.
    let s = wait(&sup, |s| s.state == State::Failed).await;
    assert!(
        s.events
            .iter()
            .any(|e| e.message.contains("waiting for the layer's image archives")),
        "{s:#?}"
    );
    std::fs::write(&paths.images_imported, "pause.tar: imported\n").unwrap();
    wait(&sup, |s| {
        s.state == State::Running && s.healthy == Some(true)
    })
    .await;

    let config_yaml = std::fs::read_to_string(paths.config()).unwrap();
    let static_pod_path = config_yaml
        .lines()
        .find_map(|l| l.strip_prefix("staticPodPath: "))
        .unwrap();
    assert_eq!(Path::new(static_pod_path), paths.k8s.manifests);
    let pods = slate_machined::kubernetes::static_pods(Path::new(static_pod_path));
    let names: Vec<(&str, &str)> = pods
        .iter()
        .map(|p| (p.name.as_str(), p.error.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("kube-apiserver", ""),
            ("kube-controller-manager", ""),
            ("kube-scheduler", "")
        ]
    );
    assert!(
        pods.iter()
            .all(|p| p.image.starts_with("registry.k8s.io/kube-"))
    );
    for c in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ] {
        assert!(
            paths
                .k8s
                .component(c)
                .join(if c == "kube-apiserver" {
                    "apiserver.crt"
                } else {
                    "kubeconfig"
                })
                .is_file()
        );
    }
    assert!(paths.k8s.admin_kubeconfig().is_file());
    sup.stop_all(Duration::from_secs(10)).await;
}

/// A kubelet from `machine.kubelet.source`: fetched over HTTP (from a
/// loopback server of the test that serves the stand-in's binary), run
/// only when its SHA-256 is the config's; a wrong digest fails the start,
/// names both digests, and leaves nothing to run.
#[tokio::test]
async fn a_downloaded_kubelet_runs_only_with_the_configured_digest() {
    let Some(mount) = root_and_cgroup2("a_downloaded_kubelet_runs_only_with_the_configured_digest")
    else {
        return;
    };
    let binary = std::fs::read(env!("CARGO_BIN_EXE_kubelet-standin")).unwrap();
    let digest = {
        let out = std::process::Command::new("sha256sum")
            .arg(env!("CARGO_BIN_EXE_kubelet-standin"))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()[..64].to_owned()
    };
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let url = serve_once_per_request(binary, served.clone());

    for (sha256, should_run) in [("0".repeat(64), false), (digest.clone(), true)] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let paths = paths_under(d);
        ready_node(&paths);
        let mut config = slate_config::generate::generate(&slate_config::generate::Options {
            cluster_name: "kube".into(),
            endpoint: "https://10.0.2.100:6443".into(),
            ..Default::default()
        })
        .unwrap()
        .worker;
        let source = slate_config::KubeletSource {
            url: url.clone(),
            sha256: sha256.clone(),
        };
        config.machine.kubelet.source = Some(source.clone());
        let program = kubelet::downloaded(&paths.downloads, &source);

        let cgroups = Cgroups(mount.join(format!(
            "slate-kubelet-dl-test-{}-{should_run}",
            std::process::id()
        )));
        let sup = Supervisor::new(cgroups.0.clone(), None);
        sup.add(ServiceSpec::new("containerd", &["/bin/sleep", "1000"]))
            .unwrap();
        sup.add(kubelet::spec(&program, &config, paths.clone()))
            .unwrap();
        if should_run {
            wait(&sup, |s| {
                s.state == State::Running && s.healthy == Some(true)
            })
            .await;
            let mode = std::fs::metadata(&program).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o755);
        } else {
            let s = wait(&sup, |s| s.state == State::Failed).await;
            assert!(
                s.events.iter().any(|e| e.message.contains(&format!(
                    "has SHA-256 {digest}, not the {sha256} the config names"
                ))),
                "{s:#?}"
            );
            assert!(!program.exists(), "a kubelet that failed its check stays");
            assert_eq!(
                std::fs::read_dir(&paths.downloads).unwrap().count(),
                0,
                "the partial download is removed"
            );
        }
        sup.stop_all(Duration::from_secs(10)).await;
    }
    assert!(served.load(std::sync::atomic::Ordering::SeqCst) >= 2);
}

/// An HTTP/1.1 server on loopback answering every GET with `body`;
/// returns its URL.
fn serve_once_per_request(
    body: Vec<u8>,
    served: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> String {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/kubelet", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
            served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    url
}

/// The cgroup2 mount, when the test runs as root; else the skip, said.
fn root_and_cgroup2(test: &str) -> Option<std::path::PathBuf> {
    // SAFETY: geteuid cannot fail.
    let (root_user, mount) = (unsafe { libc::geteuid() } == 0, cgroup::cgroup2_mount());
    let mount = mount.filter(|_| root_user);
    if mount.is_none() {
        slate_testskip::skip(
            test,
            slate_testskip::Reason::Setup("needs root and cgroup2"),
        );
    }
    mount
}

/// kubelet's files under `d`, as a node has them.
fn paths_under(d: &Path) -> KubeletPaths {
    KubeletPaths {
        dir: d.join("var-lib-kubelet"),
        network_ready: d.join("network.ready"),
        proc_sys: d.join("proc-sys"),
        swaps: d.join("swaps"),
        k8s: slate_k8s::layout::Layout::under(d),
        image_archives: d.join("images"),
        images_imported: d.join("images-imported"),
        downloads: d.join("downloads"),
    }
}

/// A node ready for kubelet: an address, br_netfilter, no swap.
fn ready_node(paths: &KubeletPaths) {
    std::fs::write(&paths.network_ready, "eth0 10.0.2.15/24 dhcp\n").unwrap();
    std::fs::create_dir_all(paths.proc_sys.join("net/ipv4")).unwrap();
    std::fs::create_dir_all(paths.proc_sys.join("net/bridge")).unwrap();
    std::fs::write(
        paths.proc_sys.join("net/bridge/bridge-nf-call-iptables"),
        "1",
    )
    .unwrap();
    std::fs::write(&paths.swaps, "Filename Type Size Used Priority\n").unwrap();
}

async fn wait(
    sup: &Supervisor,
    ok: impl Fn(&slate_machined::services::Status) -> bool,
) -> slate_machined::services::Status {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = sup.status("kubelet").unwrap();
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{s:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The test's cgroup root, emptied and removed at the end.
struct Cgroups(std::path::PathBuf);

impl Drop for Cgroups {
    fn drop(&mut self) {
        cgroup::remove_tree(&self.0);
    }
}
