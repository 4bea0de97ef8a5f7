//! Nodes booted with an extension layer each test builds for itself:
//! - a leaking and a forking service stay inside their cgroup limits (the
//!   host running the tests may lack cgroup2's memory and pids
//!   controllers; the image's kernel has them): `slate-hog` (test-only)
//!   declared as two extension services with `memoryMiB` and `pids`;
//! - kubelet runs as the node's service, after containerd, with the files
//!   and flags machined writes for it: `kubelet-standin` (test-only, it
//!   answers /healthz) as the layer's kubelet;
//! - an image archive in the layer (`--image-archive`; busybox as an OCI
//!   archive made here) is imported into containerd's k8s.io namespace
//!   before kubelet starts.
// Test code outside #[test] fns: a panic here fails the test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use slate_image::extensions::Extension;
use slate_tests::layer::{LayerNode, boot_with_images, boot_with_layer, program};
use slate_tests::slatectl::{run_as, text};
use slate_tests::wait::eventually;

const TIMEOUT: Duration = Duration::from_secs(180);
/// Between looks at the node.
const EVERY: Duration = Duration::from_secs(1);

#[tokio::test]
#[ignore = "boots QEMU: run by `make test`"]
async fn a_leaking_and_a_forking_service_stay_inside_their_limits() {
    let LayerNode {
        vm,
        slateconfig,
        node,
        _dir,
        ..
    } = boot_with_layer(
        vec![program("slate-hog")],
        &[],
        &[
            (
                "hog-memory",
                "name: hog-memory\ncommand: [/usr/local/bin/slate-hog, --memory-mib, '512']\n\
                 restart: never\nlimits: {memoryMiB: 48}\n",
            ),
            (
                "hog-pids",
                "name: hog-pids\ncommand: [/usr/local/bin/slate-hog, --children, '64']\n\
                 limits: {pids: 8}\n",
            ),
        ],
        |_| {},
    )
    .await;

    // The leak is killed at its limit, and says so in its events.
    eventually("an OOM kill of hog-memory", TIMEOUT, EVERY, || {
        let t = text(&run_as(&slateconfig, &node, &["service", "hog-memory"]));
        (
            t.contains("out of memory"),
            format!("{t}\n{}", vm.console_tail(40)),
        )
    })
    .await;
    let out = run_as(&slateconfig, &node, &["logs", "hog-memory"]);
    let held: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.strip_prefix("holding ")?
                .strip_suffix(" MiB")?
                .parse()
                .ok()
        })
        .collect();
    let most = held.iter().copied().max().unwrap_or(0);
    assert!(
        most > 0 && most <= 48,
        "held {most} MiB under a 48 MiB limit:\n{}",
        text(&out)
    );

    // The fork bomb gets 7 children (itself + 7 = pids.max 8) and no more.
    let mut said = String::new();
    eventually(
        "hog-pids saying how many children it got",
        TIMEOUT,
        EVERY,
        || {
            said = text(&run_as(&slateconfig, &node, &["logs", "hog-pids"]));
            (said.contains("children"), said.clone())
        },
    )
    .await;
    assert!(said.contains("spawned 7 of 64 children"), "{said}");
    // Neither took the node down: the API answers, the fork bomb still runs.
    let out = run_as(&slateconfig, &node, &["services", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let services: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let state = |id: &str| {
        services
            .iter()
            .find(|s| s["id"] == id)
            .map(|s| s["state"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(
        state("hog-pids").as_deref(),
        Some("Running"),
        "{services:?}"
    );
    assert_eq!(
        state("hog-memory").as_deref(),
        Some("Failed"),
        "{services:?}"
    );
}

/// kubelet as the node runs it: after containerd is healthy, with its
/// config, bootstrap kubeconfig and `--node-ip` written by machined, and
/// the node's readiness checks (br_netfilter, forwarding, swap) passed.
#[tokio::test]
#[ignore = "boots QEMU: run by `make test`"]
async fn kubelet_runs_after_containerd_with_the_files_machined_writes() {
    let LayerNode {
        vm,
        slateconfig,
        node,
        _dir,
        ..
    } = boot_with_layer(
        vec![Extension {
            name: "kubelet".into(),
            ..program("kubelet-standin")
        }],
        &["containerd", "runc"],
        &[],
        |_| {},
    )
    .await;
    let healthy = |services: &[serde_json::Value], id: &str| {
        services
            .iter()
            .any(|s| s["id"] == id && s["state"] == "Running" && s["health"] == "healthy")
    };
    let mut services: Vec<serde_json::Value> = Vec::new();
    eventually("kubelet healthy", TIMEOUT, EVERY, || {
        let out = run_as(&slateconfig, &node, &["services", "-o", "json"]);
        services = serde_json::from_slice(&out.stdout).unwrap_or_default();
        (
            healthy(&services, "kubelet"),
            format!("{}\n{}", text(&out), vm.console_tail(40)),
        )
    })
    .await;
    assert!(healthy(&services, "containerd"), "{services:?}");
    // What the stand-in printed: the flags and files a real kubelet needs.
    let out = run_as(&slateconfig, &node, &["logs", "kubelet"]);
    let t = text(&out);
    for needle in [
        "--config=/var/lib/kubelet/config.yaml: present",
        "--bootstrap-kubeconfig=/var/lib/kubelet/bootstrap-kubeconfig: present",
        "--node-ip=10.0.2.15",
        // A control-plane node: the control plane's static pods were
        // written before kubelet started, where its config points.
        "staticPodPath /var/lib/kubelet/manifests: \
         [kube-apiserver.yaml kube-controller-manager.yaml kube-scheduler.yaml]",
        "kube-apiserver.yaml: a Pod whose host paths all exist",
        "kube-controller-manager.yaml: a Pod whose host paths all exist",
        "kube-scheduler.yaml: a Pod whose host paths all exist",
    ] {
        assert!(t.contains(needle), "{needle}:\n{t}");
    }
    // The same, as an admin sees it.
    let out = run_as(&slateconfig, &node, &["get", "staticpods", "-o", "json"]);
    let pods: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let names: Vec<&str> = pods.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler"
        ],
        "{}",
        text(&out)
    );
    for p in &pods {
        assert_eq!(p["namespace"], "kube-system", "{p}");
        assert_eq!(p["error"], "", "{p}");
        assert_eq!(
            p["image"],
            format!(
                "registry.k8s.io/{}:{}",
                p["name"].as_str().unwrap(),
                slate_config::KUBERNETES_VERSION
            ),
        );
        assert_eq!(p["hash"].as_str().map(str::len), Some(16), "{p}");
    }
    // And an admin kubeconfig that kubectl reads, for the endpoint.
    let out = run_as(&slateconfig, &node, &["kubeconfig", "-"]);
    let kubeconfig = text(&out);
    assert!(out.status.success(), "{kubeconfig}");
    assert!(
        kubeconfig.contains("current-context: admin@"),
        "{kubeconfig}"
    );
}

/// An air-gapped site's images: an archive in the layer is in containerd's
/// k8s.io namespace, and kubelet runs after it.
#[tokio::test]
#[ignore = "boots QEMU: run by `make test`"]
async fn image_archives_are_imported_before_kubelet_starts() {
    let scratch = tempfile::tempdir().unwrap();
    let name = "docker.io/slate/busybox:test";
    let archive = slate_tests::oci::busybox_archive(scratch.path(), name).unwrap();
    let LayerNode {
        vm,
        slateconfig,
        node,
        _dir,
        ..
    } = boot_with_images(
        vec![Extension {
            name: "kubelet".into(),
            ..program("kubelet-standin")
        }],
        &["containerd", "runc"],
        &[archive],
    )
    .await;
    let mut images: Vec<serde_json::Value> = Vec::new();
    eventually("the archive's image in k8s.io", TIMEOUT, EVERY, || {
        let out = run_as(&slateconfig, &node, &["images", "-k", "-o", "json"]);
        images = serde_json::from_slice(&out.stdout).unwrap_or_default();
        (
            images.iter().any(|i| i["name"] == name),
            format!("{}\n{}", text(&out), vm.console_tail(40)),
        )
    })
    .await;
    let image = images.iter().find(|i| i["name"] == name).unwrap();
    assert_eq!(image["namespace"], "k8s.io");
    assert!(image["digest"].as_str().unwrap().starts_with("sha256:"));
    // kubelet started only after the import: it is healthy now, and its
    // preparation never ran ahead of the archive.
    eventually("kubelet healthy", TIMEOUT, EVERY, || {
        let out = run_as(&slateconfig, &node, &["service", "kubelet"]);
        let t = text(&out);
        (t.contains("healthy"), t)
    })
    .await;
}
