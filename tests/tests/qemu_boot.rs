//! Boot tests: the real image in QEMU (TCG), reached through the forwarded
//! apid port with slatectl's client code. Slow, so `#[ignore]`d: `make test`
//! runs them with `--include-ignored` after building the image.
// Test code outside #[test] fns: a panic here fails the test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use slate_client::Target;
use slate_config::generate::Bundle;
use slate_pki::tls;
use slate_pki::{Authority, Role};
use slate_tests::api;
use slate_tests::artifacts::Artifacts;
use slate_tests::configdrive;
use slate_tests::console;
use slate_tests::qemu::{Boot, Vm, VmOptions};

/// Generous for TCG on a busy 2-core CI machine; a boot takes seconds.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

fn cluster() -> Bundle {
    api::loopback_cluster("boot-test").unwrap()
}

fn admin_tls(bundle: &Bundle) -> Arc<rustls::ClientConfig> {
    api::context_tls(&bundle.client, "boot-test").unwrap()
}

/// Boots `boot` with `user_data` on a config drive.
fn boot(boot: Boot, user_data: &str, dir: &tempfile::TempDir) -> Vm {
    boot_with(boot, user_data, dir, |_| {})
}

/// [`boot`], with `tweak` changing the VM's options first.
fn boot_with(
    boot: Boot,
    user_data: &str,
    dir: &tempfile::TempDir,
    tweak: impl FnOnce(&mut VmOptions),
) -> Vm {
    let drive = dir.path().join("cidata.iso");
    configdrive::build(user_data, &drive).expect("building the config drive");
    let mut opts = VmOptions::new(boot);
    opts.config_drive = Some(drive);
    tweak(&mut opts);
    Vm::start(&opts, Some(&dir.path().join("console.log"))).expect("starting QEMU")
}

/// Boots `bundle`'s control-plane config by direct kernel boot and waits
/// for apid; the API target.
async fn boot_ready(a: &Artifacts, bundle: &Bundle, dir: &tempfile::TempDir) -> (Vm, Target) {
    let mut vm = boot(
        Boot::kernel(a),
        &bundle.controlplane.to_yaml().unwrap(),
        dir,
    );
    api::wait_for_version(&mut vm, admin_tls(bundle), BOOT_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let target = slate_client::parse_target(&vm.endpoint()).unwrap();
    (vm, target)
}

async fn boots_and_answers(boot_kind: Boot) -> (Vm, Bundle) {
    let bundle = cluster();
    let dir = tempfile::tempdir().unwrap();
    let mut vm = boot(boot_kind, &bundle.controlplane.to_yaml().unwrap(), &dir);
    let v = api::wait_for_version(&mut vm, admin_tls(&bundle), BOOT_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let tail = vm.console_tail(80);
    assert_eq!(v.tag, env!("CARGO_PKG_VERSION"), "console:\n{tail}");
    assert!(
        v.kernel.ends_with("-amd64"),
        "kernel {:?}; console:\n{tail}",
        v.kernel
    );
    assert_eq!(v.arch, "x86_64");
    // QEMU's DHCP server offers no hostname, so networkd derives one from the MAC.
    assert!(
        v.hostname.starts_with("slate-"),
        "hostname {:?}; console:\n{tail}",
        v.hostname
    );
    assert!(
        !v.maintenance,
        "unexpected maintenance mode: {}",
        v.maintenance_reason
    );
    assert!(v.uptime_ms > 0 && v.boot_time_unix > 1_500_000_000);
    // The console must show the DHCP lease networkd got from QEMU.
    assert!(
        console::find_line(&vm.console, "via dhcp").is_some(),
        "no DHCP line; console:\n{tail}"
    );
    std::mem::forget(dir); // the VM's console lives there until the VM is dropped
    (vm, bundle)
}

#[tokio::test]
#[ignore = "boots QEMU: run by `make test`"]
async fn kernel_boot_answers_version_and_refuses_foreign_clients() {
    let (mut vm, bundle) = boots_and_answers(Boot::kernel(&Artifacts::find().unwrap())).await;
    let target = slate_client::parse_target(&vm.endpoint()).unwrap();
    let node_ca = bundle.controlplane.machine.ca.crt_pem().unwrap();

    // A client certificate from another CA is refused.
    let other = cluster();
    let other_ca = &other.controlplane.machine.ca;
    let foreign = Authority::from_pem(
        &other_ca.crt_pem().unwrap(),
        &other_ca.key_pem().unwrap().unwrap(),
    )
    .unwrap()
    .issue_client("intruder", Role::Admin)
    .unwrap();
    let err = api::version(
        &target,
        Arc::new(tls::client(&node_ca, Some(&foreign)).unwrap()),
    )
    .await;
    assert!(
        err.is_err(),
        "a client certificate from another CA was accepted"
    );

    // So is a client without any certificate.
    let err = api::version(&target, Arc::new(tls::client_insecure().unwrap())).await;
    assert!(err.is_err(), "a client without a certificate was accepted");

    // The node still answers the right client afterwards.
    api::version(&target, admin_tls(&bundle)).await.unwrap();
    assert!(vm.is_running());

    // Each core daemon holds what init gave it, as a user sees it.
    let processes = api::processes(&target, admin_tls(&bundle)).await.unwrap();
    let process = |name: &str| {
        processes
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no {name} in {processes:?}"))
    };
    let caps = |name: &str| process(name).capabilities.clone();
    let init = processes.iter().find(|p| p.pid == 1).unwrap();
    assert_eq!(init.capabilities, ["all"]);
    assert_eq!(caps("machined"), ["all"]);
    assert_eq!(
        caps("networkd"),
        ["net_bind_service", "net_admin", "net_raw", "sys_time"]
    );
    assert!(caps("apid").is_empty(), "apid holds {:?}", caps("apid"));
    // apid is not root, and still served this call with a certificate
    // machined signed for it (it reads no CA key).
    assert_eq!(process("apid").uid, slate_common::constants::APID_UID);
    assert_eq!(process("machined").uid, 0);
    // apid's seccomp allow-list refused nothing on the way here (the
    // kernel logs each refusal as an audit line naming the syscall).
    let dmesg = api::dmesg(&target, admin_tls(&bundle)).await.unwrap();
    let uid = format!("uid={}", slate_common::constants::APID_UID);
    let refused: Vec<&String> = dmesg
        .iter()
        .filter(|l| l.contains("type=1326") && l.contains(&uid))
        .collect();
    assert!(refused.is_empty(), "apid's filter refused: {refused:?}");
}

#[tokio::test]
#[ignore = "boots QEMU: run by `make test`"]
async fn iso_boots_with_bios() {
    let a = Artifacts::find().unwrap();
    boots_and_answers(Boot::Iso {
        iso: a.iso,
        uefi: false,
    })
    .await;
}

#[tokio::test]
#[ignore = "boots QEMU: run by `make test`"]
async fn iso_boots_with_uefi() {
    let a = Artifacts::find().unwrap();
    boots_and_answers(Boot::Iso {
        iso: a.iso,
        uefi: true,
    })
    .await;
}

#[tokio::test]
#[ignore = "boots QEMU: run by `make test`"]
async fn invalid_config_drive_gives_maintenance_mode_not_a_crash_loop() {
    let a = Artifacts::find().unwrap();
    let bundle = cluster();
    // Break the YAML on a known line: an unclosed flow sequence on line 3.
    let good = bundle.worker.to_yaml().unwrap();
    let mut lines: Vec<String> = good.lines().map(str::to_owned).collect();
    lines[2] = "  type: [worker".into();
    let dir = tempfile::tempdir().unwrap();
    let mut vm = boot(Boot::kernel(&a), &(lines.join("\n") + "\n"), &dir);

    let v = api::wait_for_version(
        &mut vm,
        Arc::new(tls::client_insecure().unwrap()),
        BOOT_TIMEOUT,
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let tail = vm.console_tail(80);
    assert!(
        v.maintenance,
        "node should be in maintenance mode; console:\n{tail}"
    );
    assert!(
        v.maintenance_reason.contains("/user-data: line 3"),
        "{}",
        v.maintenance_reason
    );

    // The console names the file, the line and the error.
    let line = console::find_line(&vm.console, "invalid machine config")
        .unwrap_or_else(|| panic!("console:\n{tail}"));
    assert!(line.contains("user-data: line 3, column"), "{line}");

    // Proper clients are refused with a clear reason rather than served.
    let target = slate_client::parse_target(&vm.endpoint()).unwrap();
    let ca = bundle.worker.machine.ca.crt_pem().unwrap();
    let admin = bundle.client.contexts["boot-test"].identity().unwrap();
    assert!(
        api::version(&target, Arc::new(tls::client(&ca, Some(&admin)).unwrap()))
            .await
            .is_err()
    );

    // And nothing is crash-looping: no daemon was restarted.
    assert_eq!(
        console::count_lines(&vm.console, "restarting"),
        0,
        "console:\n{tail}"
    );
    assert!(vm.is_running());
}

#[tokio::test]
#[ignore = "boots QEMU: run by `make test`"]
async fn static_address_from_the_kernel_command_line() {
    let a = Artifacts::find().unwrap();
    let bundle = cluster();
    let dir = tempfile::tempdir().unwrap();
    let drive = dir.path().join("cidata.iso");
    configdrive::build(&bundle.controlplane.to_yaml().unwrap(), &drive).unwrap();
    let mut opts = VmOptions::new(Boot::kernel(&a));
    opts.config_drive = Some(drive);
    // QEMU forwards the API port to 10.0.2.15, so the static address is
    // that one; the console lines and the hostname show where it came from.
    opts.extra_cmdline = Some("ip=10.0.2.15::10.0.2.2:255.255.255.0:static-node:eth0:off".into());
    let mut vm = Vm::start(&opts, Some(&dir.path().join("console.log"))).unwrap();
    let v = api::wait_for_version(&mut vm, admin_tls(&bundle), BOOT_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let tail = vm.console_tail(80);
    assert_eq!(v.hostname, "static-node", "console:\n{tail}");
    let line = console::find_line(&vm.console, "eth0: 10.0.2.15/24 via static")
        .unwrap_or_else(|| panic!("no static address line; console:\n{tail}"));
    assert!(line.contains("gateway 10.0.2.2"), "{line}");
    assert!(
        console::find_line(&vm.console, "via dhcp").is_none(),
        "DHCP ran despite ip=; console:\n{tail}"
    );
}

#[tokio::test]
#[ignore = "boots QEMU: run by `make test`"]
async fn static_address_from_the_machine_config() {
    let a = Artifacts::find().unwrap();
    let mut bundle = cluster();
    // QEMU forwards the API port to 10.0.2.15: the config gives eth0 that
    // address and the default route; `ip=off` leaves eth0 to the config.
    bundle.controlplane.machine.network = slate_config::yaml::from_str(
        "hostname: cfg-node
nameservers: [10.0.2.3]
interfaces:
  - interface: eth0
    mtu: 1400
    addresses: [10.0.2.15/24]
    routes: [{network: 0.0.0.0/0, gateway: 10.0.2.2}]
",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let user_data = bundle.controlplane.to_yaml().unwrap();
    let mut vm = boot_with(Boot::kernel(&a), &user_data, &dir, |opts| {
        opts.extra_cmdline = Some("ip=off".into());
    });
    let mut v = api::wait_for_version(&mut vm, admin_tls(&bundle), BOOT_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    // The reconciler names the node within a poll of the config.
    let target = slate_client::parse_target(&vm.endpoint()).unwrap();
    for _ in 0..50 {
        if v.hostname == "cfg-node" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        v = api::version(&target, admin_tls(&bundle)).await.unwrap();
    }
    let tail = vm.console_tail(80);
    assert_eq!(v.hostname, "cfg-node", "console:\n{tail}");
    for line in [
        "network: eth0: add 10.0.2.15/24",
        "network: eth0: mtu 1400",
        "network: eth0: route 0.0.0.0/0 via 10.0.2.2",
    ] {
        assert!(
            console::find_line(&vm.console, line).is_some(),
            "no {line:?}; console:\n{tail}"
        );
    }
    assert!(
        console::find_line(&vm.console, "via dhcp").is_none(),
        "DHCP ran despite ip=off; console:\n{tail}"
    );
}

/// VLAN and dummy links from the config, created by networkd in the image's
/// own Debian kernel (the development host's kernel has no such drivers),
/// and seen through `slatectl get`'s resources.
#[tokio::test]
#[ignore = "boots QEMU: run by `make test`"]
async fn vlan_and_dummy_links_from_the_machine_config() {
    let a = Artifacts::find().unwrap();
    let mut bundle = cluster();
    bundle.controlplane.machine.network = slate_config::yaml::from_str(
        "interfaces:
  - interface: eth0
    dhcp: true
    vlans: [{vlanId: 10, addresses: [10.10.0.5/24]}]
  - interface: dummy0
    dummy: true
    addresses: [10.99.0.1/32]
",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (vm, target) = boot_ready(&a, &bundle, &dir).await;
    let list = async |kind: &str| api::list(&target, admin_tls(&bundle), kind).await.unwrap();
    let start = std::time::Instant::now();
    loop {
        let links = list("links").await;
        let addresses = list("addresses").await;
        let has_link = |name: &str, kind: &str| {
            links
                .iter()
                .any(|l| l["name"] == name && l["kind"] == kind && l["up"] == true)
        };
        let has_addr = |link: &str, addr: &str| {
            addresses
                .iter()
                .any(|x| x["link"] == link && x["address"] == addr)
        };
        if has_link("eth0.10", "vlan")
            && has_link("dummy0", "dummy")
            && has_addr("eth0.10", "10.10.0.5/24")
            && has_addr("dummy0", "10.99.0.1/32")
        {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "links {links:?}\naddresses {addresses:?}\nconsole:\n{}",
            vm.console_tail(60)
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

/// An active-backup bond over two NICs (on one QEMU hub, as two ports on
/// one switch) carries the node's only address. Cutting either member's
/// link (QEMU's `set_link`) leaves the API reachable through the other;
/// the bonding driver comes from the image's Debian kernel.
#[tokio::test]
#[ignore = "boots QEMU: run by `make test`"]
async fn a_bond_keeps_the_api_reachable_when_either_link_is_cut() {
    let a = Artifacts::find().unwrap();
    let mut bundle = cluster();
    bundle.controlplane.machine.network = slate_config::yaml::from_str(
        "interfaces:
  - interface: bond0
    bond: {interfaces: [eth0, eth1], mode: active-backup}
    addresses: [10.0.2.15/24]
    routes: [{network: 0.0.0.0/0, gateway: 10.0.2.2}]
",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let user_data = bundle.controlplane.to_yaml().unwrap();
    let monitor = dir.path().join("monitor.sock");
    let mut vm = boot_with(Boot::kernel(&a), &user_data, &dir, |opts| {
        opts.extra_cmdline = Some("ip=off".into());
        opts.nics = 2;
        opts.monitor = Some(monitor);
    });
    api::wait_for_version(&mut vm, admin_tls(&bundle), BOOT_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let target = slate_client::parse_target(&vm.endpoint()).unwrap();
    let links = api::list(&target, admin_tls(&bundle), "links")
        .await
        .unwrap();
    let tail = vm.console_tail(60);
    let link = |name: &str| links.iter().find(|l| l["name"] == name).cloned();
    let bond = link("bond0").unwrap_or_else(|| panic!("no bond0: {links:?}\n{tail}"));
    assert_eq!((&bond["kind"], &bond["up"]), (&"bond".into(), &true.into()));
    for member in ["eth0", "eth1"] {
        let l = link(member).unwrap();
        assert_eq!(l["controller"], "bond0", "{l:?}\n{tail}");
    }

    // One link down, then the other (the first back up): the API answers
    // through whichever member is left.
    for (cut, restore) in [("nic0", None), ("nic1", Some("nic0"))] {
        if let Some(nic) = restore {
            vm.monitor(&format!("set_link {nic} on")).unwrap();
        }
        vm.monitor(&format!("set_link {cut} off")).unwrap();
        // miimon notices within 100 ms; give TCG a few seconds.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            match api::version(&target, admin_tls(&bundle)).await {
                Ok(_) => break,
                Err(e) => assert!(
                    std::time::Instant::now() < deadline,
                    "no answer with {cut} cut: {e:#}\n{}",
                    vm.console_tail(40)
                ),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Both cut: nothing answers, so the cuts above were real.
    vm.monitor("set_link nic0 off").unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        api::version(&target, admin_tls(&bundle)),
    )
    .await;
    assert!(
        !matches!(answer, Ok(Ok(_))),
        "the API answered with both links cut"
    );
}

/// The mesh's kernel datapath is there on a node: init loads wireguard
/// (and udp_tunnel, the curve25519/chacha20poly1305 libraries) with the
/// link drivers, and the module's banner is in the kernel log read
/// through the API.
#[tokio::test]
#[ignore = "boots QEMU: run by `make test`"]
async fn the_wireguard_module_is_loaded_at_boot() {
    let a = Artifacts::find().unwrap();
    let bundle = cluster();
    let dir = tempfile::tempdir().unwrap();
    let (vm, target) = boot_ready(&a, &bundle, &dir).await;
    // The link drivers load after the node's first address, at idle
    // priority: give TCG time.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let lines = api::dmesg(&target, admin_tls(&bundle)).await.unwrap();
        if lines
            .iter()
            .any(|l| l.contains("wireguard: WireGuard") && l.contains("loaded"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no WireGuard banner in dmesg:\n{}\nconsole:\n{}",
            lines[lines.len().saturating_sub(30)..].join("\n"),
            vm.console_tail(40)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
