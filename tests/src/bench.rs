//! `make bench`: boot time, image sizes and daemon memory, with the busybox
//! floor measured in the same run (see [`crate::floor`]).

use std::io::Read as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use comfy_table::{Table, presets::ASCII_MARKDOWN};
use slate_client as client;
use slate_proto::machine::ProcessesRequest;

use crate::api;
use crate::artifacts::Artifacts;
use crate::configdrive;
use crate::console;
use crate::floor;
use crate::qemu::{Boot, Vm, VmOptions};

pub const BOOTS: usize = 5;
const TIMEOUT: Duration = Duration::from_secs(180);
/// The four daemons whose idle memory the targets cover (comm names).
const DAEMONS: [&str; 4] = ["init", "machined", "apid", "networkd"];

#[derive(Debug, Default)]
struct SlateBoot {
    kernel_to_init: f64,
    init_to_api: f64,
    qemu_to_version: f64,
}

/// The median of `v` (the upper one of an even count); NaN when empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

/// Prints a two-column table of `rows` (what, seconds with two decimals)
/// under `title`.
pub fn print_seconds(title: String, rows: &[(&str, f64)]) {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::ASCII_MARKDOWN)
        .set_header(vec![title, "seconds".into()]);
    for (what, seconds) in rows {
        t.add_row(vec![(*what).to_owned(), format!("{seconds:.2}")]);
    }
    println!("\n{t}");
}

/// The `p`th percentile of `v` (nearest rank); zero when empty.
pub fn percentile(v: &[Duration], p: usize) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v.get((v.len() * p / 100).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// CPU time (user + system) this process has used.
pub fn cpu() -> Duration {
    // SAFETY: getrusage fills the struct we pass; RUSAGE_SELF is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage for getrusage to fill.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

pub async fn run() -> anyhow::Result<()> {
    let artifacts = Artifacts::find()?;
    let work = tempfile::tempdir()?;
    let bundle = api::loopback_cluster("bench")?;
    let admin = api::context_tls(&bundle.client, "bench")?;
    let drive = work.path().join("cidata.iso");
    configdrive::build(&bundle.controlplane.to_yaml()?, &drive)?;

    let mut slate = Vec::new();
    let mut rss = Vec::new();
    for i in 0..BOOTS {
        let mut opts = VmOptions::new(Boot::kernel(&artifacts));
        opts.config_drive = Some(drive.clone());
        let mut vm = Vm::start(&opts, None)?;
        api::wait_for_version(&mut vm, admin.clone(), TIMEOUT).await?;
        let qemu_to_version = vm.started.elapsed().as_secs_f64();
        let stamp = |needle: &str| {
            console::find_line(&vm.console, needle)
                .and_then(|l| console::timestamp(&l))
                .with_context(|| {
                    format!(
                        "no stamped console line with {needle:?}:\n{}",
                        vm.console_tail(40)
                    )
                })
        };
        let init = stamp("init:")?;
        let ready = stamp(api::READY_LINE)?;
        slate.push(SlateBoot {
            kernel_to_init: init,
            init_to_api: ready - init,
            qemu_to_version,
        });
        eprintln!(
            "slate boot {}/{BOOTS}: {qemu_to_version:.2}s to Version",
            i + 1
        );
        if i == BOOTS - 1 {
            // Let boot-time work settle before reading idle memory.
            tokio::time::sleep(Duration::from_secs(3)).await;
            rss = daemon_rss(&vm, admin.clone()).await?;
        }
    }

    let floor_initramfs = floor::build(&artifacts.initramfs, work.path())?;
    let mut floor_total = Vec::new();
    let mut floor_ready = Vec::new();
    for i in 0..BOOTS {
        let opts = VmOptions::new(Boot::Kernel {
            vmlinuz: artifacts.vmlinuz.clone(),
            initramfs: floor_initramfs.clone(),
            cmdline: artifacts.cmdline.clone(),
        });
        let mut vm = Vm::start(&opts, None)?;
        let (total, uptime) = floor_answer(&mut vm).await?;
        eprintln!("floor boot {}/{BOOTS}: {total:.2}s to answer", i + 1);
        floor_total.push(total);
        floor_ready.push(uptime);
    }

    let iso_bios = iso_boot(&artifacts, &drive, admin.clone(), false).await?;
    let iso_uefi = iso_boot(&artifacts, &drive, admin.clone(), true).await?;

    print_report(
        &artifacts,
        &slate,
        &floor_total,
        &floor_ready,
        iso_bios,
        iso_uefi,
        &rss,
    );
    Ok(())
}

async fn iso_boot(
    a: &Artifacts,
    drive: &std::path::Path,
    tls: Arc<rustls::ClientConfig>,
    uefi: bool,
) -> anyhow::Result<f64> {
    let mut opts = VmOptions::new(Boot::Iso {
        iso: a.iso.clone(),
        uefi,
    });
    opts.config_drive = Some(drive.to_owned());
    let mut vm = Vm::start(&opts, None)?;
    api::wait_for_version(&mut vm, tls, TIMEOUT).await?;
    let t = vm.started.elapsed().as_secs_f64();
    eprintln!(
        "ISO boot ({}): {t:.2}s to Version",
        if uefi { "UEFI" } else { "BIOS" }
    );
    Ok(t)
}

/// Waits for the floor's ready line, then for its answer on the forwarded
/// port, probing one connection at a time exactly like the Slate runs.
async fn floor_answer(vm: &mut Vm) -> anyhow::Result<(f64, f64)> {
    let line = vm
        .wait_for_line(floor::READY, vm.started + TIMEOUT, 40)
        .await
        .context("the floor never got ready")?;
    let uptime: f64 = line
        .split_whitespace()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no uptime in {line:?}"))?;
    let port = vm.api_port;
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        let answer = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut buf = String::new();
            s.read_to_string(&mut buf)?;
            Ok(buf)
        })
        .await?;
        if answer.is_ok_and(|a| a.contains(floor::ANSWER)) {
            return Ok((vm.started.elapsed().as_secs_f64(), uptime));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the floor never answered:\n{}", vm.console_tail(40))
}

/// RSS of each daemon, read inside the node and reported through the API.
async fn daemon_rss(vm: &Vm, tls: Arc<rustls::ClientConfig>) -> anyhow::Result<Vec<(String, u64)>> {
    let channel = client::connect(&slate_client::parse_target(&vm.endpoint())?, tls).await?;
    let procs = client::machine(channel)
        .processes(ProcessesRequest {})
        .await?
        .into_inner()
        .processes;
    Ok(DAEMONS
        .iter()
        .map(|name| {
            let rss = procs
                .iter()
                .filter(|p| p.name == *name)
                .map(|p| p.rss_bytes)
                .sum();
            (name.to_string(), rss)
        })
        .collect())
}

fn print_report(
    a: &Artifacts,
    slate: &[SlateBoot],
    floor_total: &[f64],
    floor_ready: &[f64],
    iso_bios: f64,
    iso_uefi: f64,
    rss: &[(String, u64)],
) {
    let shape = VmOptions::new(Boot::kernel(a));
    let title = format!(
        "metric ({}, {} vCPU, {} MiB, median of {BOOTS})",
        crate::qemu::accel(),
        shape.cpus,
        shape.memory_mib
    );
    let mut t = Table::new();
    t.load_style(ASCII_MARKDOWN).set_header(vec![
        title.as_str(),
        "Slate",
        "floor",
        "Slate/floor",
        "target",
    ]);
    let s = |f: fn(&SlateBoot) -> f64| median(slate.iter().map(f).collect());
    let total = s(|b| b.qemu_to_version);
    let floor = median(floor_total.to_vec());
    let k2i = s(|b| b.kernel_to_init);
    let floor_k2r = median(floor_ready.to_vec());
    t.add_row(vec![
        "kernel start → init (s)".into(),
        format!("{k2i:.3}"),
        "-".into(),
        "-".into(),
        "-".into(),
    ]);
    t.add_row(vec![
        "init → API ready (s)".into(),
        format!("{:.3}", s(|b| b.init_to_api)),
        "-".into(),
        "-".into(),
        "≤ 0.500".into(),
    ]);
    t.add_row(vec![
        "kernel start → network answer ready (s)".into(),
        format!("{:.3}", k2i + s(|b| b.init_to_api)),
        format!("{floor_k2r:.3}"),
        format!("{:.2}", (k2i + s(|b| b.init_to_api)) / floor_k2r),
        "-".into(),
    ]);
    t.add_row(vec![
        "QEMU start → first answer (s)".into(),
        format!("{total:.2}"),
        format!("{floor:.2}"),
        format!("{:.2}", total / floor),
        "≤ 3.0".into(),
    ]);
    t.add_row(vec![
        "ISO, BIOS: QEMU start → Version (s, 1 boot)".into(),
        format!("{iso_bios:.2}"),
        "-".into(),
        "-".into(),
        "-".into(),
    ]);
    t.add_row(vec![
        "ISO, UEFI: QEMU start → Version (s, 1 boot)".into(),
        format!("{iso_uefi:.2}"),
        "-".into(),
        "-".into(),
        "-".into(),
    ]);
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    for (name, path, target) in [
        ("vmlinuz", &a.vmlinuz, "-"),
        ("initramfs.zst", &a.initramfs, "-"),
        ("rootfs.sqsh", &a.rootfs, "≤ 10 MB"),
        ("slate.iso", &a.iso, "-"),
    ] {
        t.add_row(vec![
            format!("size {name} (MB)"),
            format!("{:.2}", size(path) as f64 / 1e6),
            "-".into(),
            "-".into(),
            target.into(),
        ]);
    }
    let mut sum = 0;
    for (name, bytes) in rss {
        sum += bytes;
        t.add_row(vec![
            format!("idle RSS {name} (MiB)"),
            format!("{:.1}", *bytes as f64 / 1048576.0),
            "-".into(),
            "-".into(),
            "-".into(),
        ]);
    }
    t.add_row(vec![
        "idle RSS, four daemons (MiB)".into(),
        format!("{:.1}", sum as f64 / 1048576.0),
        "-".into(),
        "-".into(),
        "≤ 40 MB".into(),
    ]);
    println!("{t}");
}
