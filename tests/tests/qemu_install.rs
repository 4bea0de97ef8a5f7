//! Install, upgrade, rollback and reset on a real node, driven by the
//! slatectl binary: the ISO installs to a blank disk and the VM then boots
//! from the disk alone (BIOS and UEFI); bundles go into the other slot,
//! a bundle that cannot boot is rolled back from by itself, a write cut by
//! a power loss leaves the old slot, and a reset brings back maintenance.
//!
//! QEMU runs with `-no-reboot`: each reboot of the guest ends QEMU, and the
//! test starts it again on the same disk, as the firmware would.
// Test code outside #[test] fns: a panic here fails the test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use slate_pki::tls;
use slate_tests::api;
use slate_tests::artifacts::{Artifacts, built};
use slate_tests::console;
use slate_tests::qemu::{Boot, Vm, VmOptions};
use slate_tests::slatectl::{apply_insecure, gen_config, run_as as slatectl_as, text};

const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// A reboot asked for over the API ends QEMU within this.
const REBOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// The version string of the second bundle.
const NEXT: &str = "0.1.0-next";

fn blank_disk(dir: &Path) -> PathBuf {
    let path = dir.join("system.raw");
    slate_tests::qemu::blank_disk(&path).unwrap();
    path
}

fn start(boot: Boot, disk: &Path, console: &Path) -> Vm {
    start_on(boot, disk, console, None)
}

/// [`start`] on the host port of an earlier run of the node, as a node
/// that reboots keeps its address.
fn start_on(boot: Boot, disk: &Path, console: &Path, api_port: Option<u16>) -> Vm {
    let mut opts = VmOptions::new(boot);
    opts.system_disk = Some(disk.to_owned());
    opts.ports = api_port.map(|p| (p, vec![]));
    Vm::start(&opts, Some(console)).expect("starting QEMU")
}

/// Maintenance mode, then `apply-config --insecure` of `config`.
async fn configure(vm: &mut Vm, config: &Path) {
    let insecure = Arc::new(tls::client_insecure().unwrap());
    let v = api::wait_for_version(vm, insecure, BOOT_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(v.maintenance, "console:\n{}", vm.console_tail(60));
    let out = apply_insecure(&vm.endpoint(), config);
    assert!(
        out.status.success(),
        "{}\nconsole:\n{}",
        text(&out),
        vm.console_tail(60)
    );
}

/// Waits until the admin can call `version`; returns its tag.
async fn wait_configured(vm: &mut Vm, client: &Path) -> String {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    vm.wait_for_boot_line(api::READY_LINE, deadline, 80)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    loop {
        let out = slatectl_as(client, &vm.endpoint(), &["version", "-o", "json"]);
        if out.status.success() {
            // One row for the client, one for the node.
            let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let node = rows
                .as_array()
                .and_then(|r| r.iter().find(|r| r["node"] != "(client)"))
                .unwrap_or_else(|| panic!("no node row: {rows}"));
            return node["tag"].as_str().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the admin was never served; console:\n{}",
            vm.console_tail(80)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `get bootslots -o json`, by slot name.
fn boot_slots(client: &Path, vm: &Vm) -> Vec<serde_json::Value> {
    let out = slatectl_as(client, &vm.endpoint(), &["get", "bootslots", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().unwrap().clone()
}

fn slot<'a>(slots: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    slots
        .iter()
        .find(|s| s["slot"] == name)
        .unwrap_or_else(|| panic!("no slot {name} in {slots:?}"))
}

/// Waits until the booted slot is good (its health gate passed).
async fn wait_good(client: &Path, vm: &Vm, name: &str) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        let slots = boot_slots(client, vm);
        let s = slot(&slots, name);
        if s["active"] == true && s["state"] == "good" {
            return slots;
        }
        assert!(
            Instant::now() < deadline,
            "slot {name} never became good: {slots:?}\nconsole:\n{}",
            vm.console_tail(60)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The guest reboots: QEMU ends (`-no-reboot`) and starts again from the
/// disk, as the firmware would.
async fn rebooted(mut vm: Vm, disk: &Path, console: &Path, uefi: bool) -> Vm {
    assert!(
        vm.wait_for_exit(Instant::now() + REBOOT_TIMEOUT).await,
        "the node did not reboot; console:\n{}",
        vm.console_tail(60)
    );
    start_on(Boot::Disk { uefi }, disk, console, Some(vm.api_port))
}

async fn install_from_the_iso(uefi: bool) {
    let a = Artifacts::find().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    gen_config("inst", d);
    let client = d.join("slateconfig");
    let disk = blank_disk(d);

    // The ISO and a blank disk: maintenance mode, then a config.
    let mut vm = start(
        Boot::Stick {
            iso: a.iso.clone(),
            uefi,
        },
        &disk,
        &d.join("console-iso.log"),
    );
    configure(&mut vm, &d.join("controlplane.yaml")).await;
    let line = vm
        .wait_for_line("installed Slate", Instant::now() + BOOT_TIMEOUT, 60)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(line.contains("(slot A)"), "{line}");
    vm.kill();

    // The disk alone: GRUB from it, slot A, the config from STATE.
    let console = d.join("console-disk.log");
    let mut vm = start(Boot::Disk { uefi }, &disk, &console);
    let tag = wait_configured(&mut vm, &client).await;
    assert_eq!(tag, slate_common::version::TAG, "version answered {tag}");
    assert!(
        console::find_line(&console, "machine config from STATE").is_some(),
        "console:\n{}",
        vm.console_tail(60)
    );
    let booted = console::find_line(&console, "boot slot A:").unwrap_or_default();
    assert!(
        booted.contains("good, running"),
        "GRUB booted slot A from the disk; console:\n{}",
        vm.console_tail(60)
    );
    let slots = boot_slots(&client, &vm);
    assert_eq!(slots.len(), 1, "{slots:?}");
    let a_slot = slot(&slots, "A");
    assert_eq!(a_slot["state"], "good");
    assert_eq!(a_slot["active"], true);
    assert_eq!(a_slot["next"], true);
    assert_eq!(a_slot["version"], slate_common::version::TAG);
}

#[tokio::test]
#[ignore = "boots QEMU: run by `make test`"]
async fn the_iso_installs_to_disk_and_the_disk_boots_alone_bios() {
    install_from_the_iso(false).await;
}

#[tokio::test]
#[ignore = "boots QEMU: run by `make test`"]
async fn the_iso_installs_to_disk_and_the_disk_boots_alone_uefi() {
    install_from_the_iso(true).await;
}

/// The same image as `_out/`, saying it is [`NEXT`]: `slate-image
/// --os-version` into `dir`, sharing `_out/cache` (no download).
fn build_next(dir: &Path) -> PathBuf {
    let out = dir.join("next");
    std::fs::create_dir_all(&out).unwrap();
    std::os::unix::fs::symlink(Artifacts::dir().join("cache"), out.join("cache")).unwrap();
    let bin_dir = built("slatectl").parent().unwrap().to_owned();
    let status = std::process::Command::new(built("slate-image"))
        .args(["--kernel", "cloud", "--bin-dir"])
        .arg(&bin_dir)
        .arg("--out")
        .arg(&out)
        .args([
            "--debian-extensions",
            "containerd,runc,etcd-server,containernetworking-plugins",
            "--os-version",
            NEXT,
        ])
        .status()
        .expect("running slate-image (make build)");
    assert!(status.success(), "slate-image --os-version {NEXT} failed");
    out.join("slate.bundle")
}

#[tokio::test]
#[ignore = "boots QEMU: run by `make test`"]
async fn upgrade_rollback_failed_boot_interrupted_write_and_reset() {
    let a = Artifacts::find().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    gen_config("upg", d);
    let client = d.join("slateconfig");
    let disk = blank_disk(d);
    let next = build_next(d);
    let broken = slate_tests::bundles::broken(&a.bundle, d).unwrap();
    let upgrade = |vm: &Vm, bundle: &Path| {
        slatectl_as(
            &client,
            &vm.endpoint(),
            &["upgrade", "--image", bundle.to_str().unwrap(), "--no-wait"],
        )
    };

    // A node booted by a direct kernel has no medium to install from:
    // `upgrade` installs slot A (and GRUB) from the streamed bundle.
    let mut vm = start(
        Boot::kernel_with_extensions(&a).unwrap(),
        &disk,
        &d.join("console-0.log"),
    );
    configure(&mut vm, &d.join("controlplane.yaml")).await;
    wait_configured(&mut vm, &client).await;
    let out = upgrade(&vm, &a.bundle);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("written to slot A; rebooting"),
        "{}",
        text(&out)
    );
    let mut vm = rebooted(vm, &disk, &d.join("console-1.log"), false).await;
    assert_eq!(
        wait_configured(&mut vm, &client).await,
        slate_common::version::TAG
    );
    wait_good(&client, &vm, "A").await;

    // Upgrade: slot B, booted once, healthy, good; `version` says so.
    let out = upgrade(&vm, &next);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("Slate {NEXT} written to slot B")),
        "{}",
        text(&out)
    );
    let mut vm = rebooted(vm, &disk, &d.join("console-2.log"), false).await;
    assert_eq!(wait_configured(&mut vm, &client).await, NEXT);
    let slots = wait_good(&client, &vm, "B").await;
    assert_eq!(slot(&slots, "B")["version"], NEXT);
    assert_eq!(slot(&slots, "A")["state"], "good");
    assert_eq!(slot(&slots, "A")["active"], false);
    let table = text(&slatectl_as(&client, &vm.endpoint(), &["get", "bootslots"]));
    assert!(
        table.starts_with("NODE") && table.contains("SLOT"),
        "{table}"
    );

    // Rollback by hand: A again.
    let out = slatectl_as(&client, &vm.endpoint(), &["rollback"]);
    assert!(out.status.success(), "{}", text(&out));
    let mut vm = rebooted(vm, &disk, &d.join("console-3.log"), false).await;
    assert_eq!(
        wait_configured(&mut vm, &client).await,
        slate_common::version::TAG
    );
    wait_good(&client, &vm, "A").await;

    // A bundle that cannot boot goes into B; B panics once, and the node
    // comes back on A by itself, saying why.
    let out = upgrade(&vm, &broken);
    assert!(out.status.success(), "{}", text(&out));
    let panicking = d.join("console-4.log");
    let vm = rebooted(vm, &disk, &panicking, false).await;
    let mut vm = rebooted(vm, &disk, &d.join("console-5.log"), false).await;
    assert!(
        console::find_line(&panicking, "Kernel panic").is_some(),
        "the broken slot was booted once: {}",
        console::tail(&panicking, 30)
    );
    assert_eq!(
        wait_configured(&mut vm, &client).await,
        slate_common::version::TAG
    );
    let slots = boot_slots(&client, &vm);
    let b = slot(&slots, "B");
    assert_eq!(b["state"], "failed", "{slots:?}");
    assert!(
        b["reason"].as_str().unwrap().contains("did not come up"),
        "{slots:?}"
    );
    assert_eq!(slot(&slots, "A")["active"], true);
    // Nothing good to roll back to.
    let out = slatectl_as(&client, &vm.endpoint(), &["rollback"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("slot B is failed"), "{}", text(&out));

    // The power fails while B is written: A boots, intact.
    let mut cut = std::process::Command::new(slate_tests::slatectl::path())
        .args(["--config", client.to_str().unwrap(), "-n", &vm.endpoint()])
        .args(["upgrade", "--image", next.to_str().unwrap(), "--no-wait"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    vm.wait_for_line("upgrade: writing slot B", Instant::now() + BOOT_TIMEOUT, 30)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    vm.kill();
    let _ = cut.kill();
    let _ = cut.wait();
    let mut vm = start(Boot::Disk { uefi: false }, &disk, &d.join("console-6.log"));
    assert_eq!(
        wait_configured(&mut vm, &client).await,
        slate_common::version::TAG
    );
    let slots = boot_slots(&client, &vm);
    assert_eq!(slot(&slots, "A")["active"], true, "{slots:?}");
    let b = slot(&slots, "B");
    assert_eq!(b["state"], "failed", "{slots:?}");
    assert!(
        b["reason"].as_str().unwrap().contains("interrupted"),
        "{slots:?}"
    );

    // Reset: maintenance mode on the next boot, and a fresh config works.
    let out = slatectl_as(&client, &vm.endpoint(), &["reset"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("STATE and EPHEMERAL"), "{}", text(&out));
    let console = d.join("console-7.log");
    let mut vm = rebooted(vm, &disk, &console, false).await;
    configure(&mut vm, &d.join("controlplane.yaml")).await;
    assert!(
        console::find_line(&console, "reset: wiped STATE").is_some()
            && console::find_line(&console, "reset: wiped EPHEMERAL").is_some(),
        "console:\n{}",
        vm.console_tail(60)
    );
    wait_configured(&mut vm, &client).await;
    // The slots survive a reset.
    assert_eq!(slot(&boot_slots(&client, &vm), "A")["state"], "good");
}
