//! `make bench`: install, upgrade and rollback, median of [`RUNS`] under
//! TCG, each run on a fresh blank disk:
//! - install: `apply-config` sent to a node booted from the ISO → the node
//!   says it installed (partition table, STATE, EPHEMERAL, BOOT, GRUB for
//!   BIOS and UEFI, slot A);
//! - upgrade write: `slatectl upgrade` of `_out/slate.bundle` from start
//!   to its answer (streamed over QEMU's user network, verified, written);
//! - upgrade downtime: that answer (the node reboots) → `version` answers
//!   the admin again, booted from the new slot;
//! - rollback after a failed boot: `upgrade` of a bundle that panics
//!   answers → the node has booted it once, panicked, and answers again
//!   from the previous slot.
//!
//! QEMU runs with `-no-reboot`: a reboot ends it and the harness starts it
//! again at once, which stands in for the firmware's restart (a real
//! machine's POST adds its own seconds).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::artifacts::Artifacts;
use crate::bench::{median, print_seconds};
use crate::qemu::{Boot, Vm, VmOptions};
use crate::slatectl::{apply_insecure, gen_config, run_as, text};

const RUNS: usize = 3;
const TIMEOUT: Duration = Duration::from_secs(240);

struct Figures {
    install: f64,
    upgrade_write: f64,
    upgrade_downtime: f64,
    rollback: f64,
}

fn start(boot: Boot, disk: &Path, console: &Path, port: Option<u16>) -> anyhow::Result<Vm> {
    let mut opts = VmOptions::new(boot);
    opts.system_disk = Some(disk.to_owned());
    opts.ports = port.map(|p| (p, vec![]));
    Vm::start(&opts, Some(console))
}

/// Polls `version` as the admin until it answers.
async fn wait_admin(vm: &mut Vm, client: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if run_as(client, &vm.endpoint(), &["version"])
            .status
            .success()
        {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline && vm.is_running(),
            "no answer; console:\n{}",
            vm.console_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for the guest's reboot (QEMU ends) and starts it from the disk.
async fn reboot(mut vm: Vm, disk: &Path, console: &Path) -> anyhow::Result<Vm> {
    anyhow::ensure!(
        vm.wait_for_exit(Instant::now() + TIMEOUT).await,
        "the node did not reboot; console:\n{}",
        vm.console_tail(40)
    );
    start(Boot::Disk { uefi: false }, disk, console, Some(vm.api_port))
}

async fn one(a: &Artifacts, run: usize, dir: &Path, broken: &Path) -> anyhow::Result<Figures> {
    let d = dir.join(format!("run-{run}"));
    std::fs::create_dir_all(&d)?;
    gen_config("bench", &d);
    let client = d.join("slateconfig");
    let disk = d.join("system.raw");
    crate::qemu::blank_disk(&disk)?;

    // Install from the ISO (as a USB stick).
    let iso = Boot::Stick {
        iso: a.iso.clone(),
        uefi: false,
    };
    let mut vm = start(iso, &disk, &d.join("console-iso.log"), None)?;
    let insecure = std::sync::Arc::new(slate_pki::tls::client_insecure()?);
    crate::api::wait_for_version(&mut vm, insecure, TIMEOUT).await?;
    let sent = Instant::now();
    let out = apply_insecure(&vm.endpoint(), &d.join("controlplane.yaml"));
    anyhow::ensure!(out.status.success(), "apply-config: {}", text(&out));
    vm.wait_for_line("installed Slate", Instant::now() + TIMEOUT, 40)
        .await?;
    let install = sent.elapsed().as_secs_f64();
    vm.kill();

    let console = |n: &str| d.join(format!("console-{n}.log"));
    let mut vm = start(Boot::Disk { uefi: false }, &disk, &console("disk"), None)?;
    wait_admin(&mut vm, &client).await?;

    // Upgrade into B: the write, then the reboot's downtime.
    let upgrade = |vm: &Vm, bundle: &Path| {
        run_as(
            &client,
            &vm.endpoint(),
            &[
                "upgrade",
                "--image",
                bundle.to_str().unwrap_or_default(),
                "--no-wait",
            ],
        )
    };
    let asked = Instant::now();
    let out = upgrade(&vm, &a.bundle);
    anyhow::ensure!(out.status.success(), "upgrade: {}", text(&out));
    let answered = Instant::now();
    let upgrade_write = (answered - asked).as_secs_f64();
    let mut vm = reboot(vm, &disk, &console("upgraded")).await?;
    wait_admin(&mut vm, &client).await?;
    let upgrade_downtime = answered.elapsed().as_secs_f64();

    // A bundle that panics goes into A; the node comes back on B.
    let out = upgrade(&vm, broken);
    anyhow::ensure!(out.status.success(), "upgrade: {}", text(&out));
    let answered = Instant::now();
    let vm = reboot(vm, &disk, &console("panics")).await?;
    let mut vm = reboot(vm, &disk, &console("rolled-back")).await?;
    wait_admin(&mut vm, &client).await?;
    let rollback = answered.elapsed().as_secs_f64();
    vm.kill();
    Ok(Figures {
        install,
        upgrade_write,
        upgrade_downtime,
        rollback,
    })
}

pub async fn run() {
    let result = async {
        let a = Artifacts::find()?;
        let work = tempfile::tempdir()?;
        let broken = crate::bundles::broken(&a.bundle, work.path())?;
        let mut runs = Vec::new();
        for run in 0..RUNS {
            runs.push(
                one(&a, run, work.path(), &broken)
                    .await
                    .with_context(|| format!("run {}", run + 1))?,
            );
        }
        let mb = std::fs::metadata(&a.bundle)?.len() / 1_000_000;
        anyhow::Ok((runs, mb))
    }
    .await;
    match result {
        Ok((runs, mb)) => {
            let m = |f: fn(&Figures) -> f64| median(runs.iter().map(f).collect());
            let write = format!("upgrade: {mb} MB bundle streamed, verified, written");
            print_seconds(
                format!("install and upgrade (TCG, median of {RUNS})"),
                &[
                    ("apply-config → installed to disk", m(|f| f.install)),
                    (&write, m(|f| f.upgrade_write)),
                    (
                        "upgrade downtime: reboot → API on the new slot",
                        m(|f| f.upgrade_downtime),
                    ),
                    ("failed boot → API on the previous slot", m(|f| f.rollback)),
                ],
            );
        }
        Err(e) => eprintln!("install benchmark failed: {e:#}"),
    }
}
