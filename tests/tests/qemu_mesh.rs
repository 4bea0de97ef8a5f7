//! WireGuard interop: the mesh between two independent implementations.
//!
//! A Slate VM runs the mesh on the kernel's WireGuard
//! (`cluster.mesh.backend: kernel`, Debian's module). On the host, in a
//! network namespace, networkd runs it on boringtun (the userspace
//! backend). A tap device joins them: QEMU creates it for the VM's second
//! NIC and the test moves it into the namespace (10.6.0.1/24; the VM
//! 10.6.0.2/24). The VM is a control-plane node and the cluster's
//! control-plane endpoint is its tap address, so the discovery service is
//! the one the node runs by default (machined starts it, port 3000) and
//! both sides find it without being told (`cluster.mesh.discovery` is
//! unset). Nothing tells either side about the other but discovery.
//!
//! Checked as a user would: each side lists the other as `up` in
//! `mesh-peers` (the VM's through the API, as `slatectl get mesh-peers`
//! reads it; the namespace's from networkd's socket), and a TCP connection
//! from the namespace to the VM's mesh address (apid's port) is answered
//! through the tunnel, with bytes counted on both sides. Then both sit
//! idle for 45 s, past the 40 s after which a silent peer is down: each
//! keeps the other up on the same session (the VM's networkd judges a
//! kernel peer by its received bytes growing; the host hears the kernel's
//! keepalives or the answers to its liveness pings).

use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use slate_config::{MachineConfig, MeshBackend};
use slate_tests::api;
use slate_tests::artifacts::{Artifacts, built};
use slate_tests::cluster;
use slate_tests::configdrive;
use slate_tests::meshlab;
use slate_tests::netns::{self, Namespaces};
use slate_tests::qemu::{Boot, Vm, VmOptions};

const HOST_IP: &str = "10.6.0.1";
const VM_IP: &str = "10.6.0.2";
/// The idle check: 9 polls 5 s apart, past the 40 s after which a
/// silent peer counts as down.
const IDLE_POLLS: usize = 9;
const IDLE_POLL: Duration = Duration::from_secs(5);
const FORM_TIMEOUT: Duration = Duration::from_secs(120);

/// Kills its processes on drop (networkd).
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn skip() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (tap device, namespace)".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("no /dev/net/tun".into());
    }
    None
}

/// The mesh on, found through the default discovery service: the one the
/// control-plane node at the endpoint's host runs.
fn mesh_on(config: &mut MachineConfig, backend: MeshBackend, hostname: &str) {
    config.machine.network.hostname = Some(hostname.into());
    config.cluster.mesh.enabled = true;
    config.cluster.mesh.backend = backend;
    config.cluster.control_plane.endpoint = format!("https://{VM_IP}:6443");
    config.cluster.mesh.discovery.endpoint = None;
}

fn ip(args: &[&str]) {
    netns::run(&[&["ip"], args].concat());
}

/// The peer named `hostname` in `peers` (mesh-peers specs).
fn named(peers: Vec<serde_json::Value>, hostname: &str) -> Option<serde_json::Value> {
    peers.into_iter().find(|p| p["hostname"] == hostname)
}

/// The peer named `hostname` in `peers`, if up.
fn up<'a>(peers: &'a [serde_json::Value], hostname: &str) -> Option<&'a serde_json::Value> {
    peers
        .iter()
        .find(|p| p["hostname"] == hostname && p["state"] == "up")
}

#[tokio::test]
#[ignore = "boots QEMU: run by `make test`"]
async fn kernel_wireguard_in_a_vm_and_boringtun_on_the_host_form_the_mesh() {
    if let Some(why) = skip() {
        netns::skipped(
            "kernel_wireguard_in_a_vm_and_boringtun_on_the_host_form_the_mesh",
            &why,
        );
        return;
    }
    let a = Artifacts::find().unwrap();
    let bundle = api::loopback_cluster("mesh-interop").unwrap();
    let tls = api::context_tls(&bundle.client, "mesh-interop").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tag = std::process::id();
    let ns = format!("slwg{tag}");
    let tap = format!("slwgtap{tag}");
    let mut namespaces = Namespaces::new();
    namespaces.add(&ns);

    // The VM: kernel WireGuard, its second NIC on the tap.
    let mut vm_config = bundle.controlplane.clone();
    mesh_on(&mut vm_config, MeshBackend::Kernel, "vm");
    vm_config.machine.network.interfaces = cluster::uplink_and_lan(&format!("{VM_IP}/24"));
    let drive = dir.path().join("cidata.iso");
    configdrive::build(&vm_config.to_yaml().unwrap(), &drive).unwrap();
    let mut opts = VmOptions::new(Boot::kernel(&a));
    opts.config_drive = Some(drive);
    opts.tap = Some(tap.clone());
    let mut vm = Vm::start(&opts, Some(&dir.path().join("console.log"))).expect("starting QEMU");

    // The tap into the namespace, as the host side's only link.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !Path::new("/sys/class/net").join(&tap).exists() {
        assert!(Instant::now() < deadline, "QEMU made no tap {tap}");
        std::thread::sleep(Duration::from_millis(50));
    }
    ip(&["link", "set", &tap, "netns", &ns]);
    ip(&[
        "-n",
        &ns,
        "addr",
        "add",
        &format!("{HOST_IP}/24"),
        "dev",
        &tap,
    ]);
    ip(&["-n", &ns, "link", "set", &tap, "up"]);
    ip(&["-n", &ns, "link", "set", "lo", "up"]);

    // The host side: networkd (boringtun) in the namespace.
    let mut children = Children(Vec::new());
    let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
    let host_dir = dir.path().join("host");
    std::fs::create_dir_all(host_dir.join("run")).unwrap();
    std::fs::write(host_dir.join("cmdline"), "ip=off").unwrap();
    let mut host_config = bundle.worker.clone();
    mesh_on(&mut host_config, MeshBackend::Userspace, "host");
    std::fs::write(
        host_dir.join("run/machine-config.json"),
        host_config.to_json().unwrap(),
    )
    .unwrap();
    children.0.push(
        netns::networkd_command(&built("networkd"), &ns, &host_dir)
            .env("SLATE_NETWORKD_SYSFS", "/sys")
            .env("SLATE_NETWORKD_MESH_KEY", host_dir.join("mesh.key"))
            .stdout(Stdio::null())
            .stderr(log("networkd.log"))
            .spawn()
            .expect("starting networkd"),
    );
    let host_socket: PathBuf = host_dir.join("run/networkd.sock");

    api::wait_for_version(&mut vm, tls.clone(), Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let target = slate_client::parse_target(&vm.endpoint()).unwrap();
    // What each side lists in mesh-peers (none while it cannot answer).
    let list_vm = || async {
        api::list(&target, tls.clone(), "mesh-peers")
            .await
            .unwrap_or_default()
    };
    let list_host = || {
        let socket = host_socket.clone();
        async move {
            // meshlab's reader runs a runtime of its own: off this one.
            tokio::task::spawn_blocking(move || meshlab::list(&socket, "mesh-peers"))
                .await
                .unwrap()
                .unwrap_or_default()
                .into_iter()
                .map(|(_, spec)| spec)
                .collect::<Vec<serde_json::Value>>()
        }
    };

    // Both list each other as up: discovery alone told them.
    let deadline = Instant::now() + FORM_TIMEOUT;
    let (vm_identity, host_sees_vm) = loop {
        let vm_peers = list_vm().await;
        let host_peers = list_host().await;
        if up(&vm_peers, "host").is_some()
            && let Some(seen) = up(&host_peers, "vm")
        {
            let identity = api::list(&target, tls.clone(), "mesh-identity")
                .await
                .unwrap();
            break (identity[0].clone(), seen.clone());
        }
        assert!(
            Instant::now() < deadline,
            "the mesh did not form in {FORM_TIMEOUT:?}\nVM's peers: {vm_peers:#?}\nhost's peers: {host_peers:#?}\nhost networkd:\n{}\nVM console:\n{}",
            mesh_lines(
                &std::fs::read_to_string(dir.path().join("networkd.log")).unwrap_or_default()
            ),
            mesh_lines(&vm.console_tail(2000))
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert_eq!(vm_identity["backend"], "kernel", "{vm_identity:#}");
    // Both published to the service the VM runs.
    let socket = host_socket.clone();
    let host_identity =
        tokio::task::spawn_blocking(move || meshlab::list(&socket, "mesh-identity"))
            .await
            .unwrap()
            .unwrap();
    for identity in [&vm_identity, &host_identity[0].1] {
        assert!(
            identity["discovery"]
                .as_str()
                .is_some_and(|d| d.starts_with("published")),
            "{identity:#}"
        );
    }
    assert!(
        host_sees_vm["endpoint"]
            .as_str()
            .is_some_and(|e| e.starts_with(VM_IP)),
        "the host reaches the VM at its tap address: {host_sees_vm:#}"
    );

    // Traffic through the tunnel: a TCP connection to apid on the VM's
    // mesh address, from the namespace.
    let vm_mesh: Ipv6Addr = vm_identity["meshAddress"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let to = SocketAddr::new(vm_mesh.into(), 50000);
    let connected = meshlab::in_namespace(&ns, move || {
        std::net::TcpStream::connect_timeout(&to, Duration::from_secs(10)).map(drop)
    });
    connected.unwrap_or_else(|e| panic!("connecting to the VM's apid at {to} over the mesh: {e}"));
    let vm_peers = list_vm().await;
    let host = up(&vm_peers, "host").expect("still up");
    assert!(
        host["rxBytes"].as_u64().unwrap_or(0) > 0 && host["txBytes"].as_u64().unwrap_or(0) > 0,
        "the VM's kernel counted the traffic: {host:#}"
    );

    // Idle past STALE (40 s): each side keeps the other up, with the same
    // session on the host (no handshake forced by a peer gone quiet), and
    // what each sent while idle was counted by the other.
    let host_view = async || named(list_host().await, "vm").expect("the host lists the VM");
    let vm_view = async || named(list_vm().await, "host").expect("the VM lists the host");
    let before = host_view().await;
    let vm_before = vm_view().await;
    for _ in 0..IDLE_POLLS {
        tokio::time::sleep(IDLE_POLL).await;
        let now = host_view().await;
        assert_eq!(now["state"], "up", "the host's view while idle: {now:#}");
        assert_eq!(
            now["lastHandshake"], before["lastHandshake"],
            "no new handshake while idle: {now:#}"
        );
        let vm_now = vm_view().await;
        assert_eq!(
            vm_now["state"], "up",
            "the VM's view while idle: {vm_now:#}"
        );
    }
    let after = host_view().await;
    let vm_after = vm_view().await;
    for (b, a) in [(&before, &after), (&vm_before, &vm_after)] {
        assert!(
            a["rxBytes"].as_u64() > b["rxBytes"].as_u64(),
            "bytes arrived while idle: {b:#} then {a:#}"
        );
    }
}

/// The last 30 lines about the mesh (networkd's debug log is mostly
/// gRPC frames).
fn mesh_lines(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("mesh") || l.contains("wireguard") || l.contains("WARN"))
        .collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
