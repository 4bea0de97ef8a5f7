//! `make bench`, supervisor part (root, cgroup2): what machined's service
//! supervisor itself costs with 10 services, each a `sleep` with a health
//! check every second, measured in this process over an idle window.
//! What it shows: supervision is a few tasks and timers, not a poller.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use comfy_table::{Table, presets::ASCII_MARKDOWN};
use slate_machined::services::spec::{HealthCheck, Probe};
use slate_machined::services::{ServiceSpec, State, Supervisor, cgroup};

use crate::bench::cpu;

const SERVICES: usize = 10;
const WINDOW: Duration = Duration::from_secs(10);

/// This process's resident memory in KiB (`VmRSS`).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

struct Figures {
    rss_before_kib: u64,
    rss_after_kib: u64,
    cpu_in_window: Duration,
}

async fn measure(root: PathBuf) -> anyhow::Result<Figures> {
    let sup = Supervisor::new(root, None);
    let rss_before_kib = rss_kib();
    for i in 0..SERVICES {
        let mut spec = ServiceSpec::new(&format!("bench{i}"), &["/bin/sleep", "1000"]);
        spec.health = Some(HealthCheck {
            probe: Probe::Exec(vec!["/bin/true".into()]),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        });
        sup.add(spec)?;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sup
        .list()
        .iter()
        .all(|s| s.state == State::Running && s.healthy == Some(true))
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "services not healthy: {:?}",
            sup.list()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let start = cpu();
    tokio::time::sleep(WINDOW).await;
    let cpu_in_window = cpu() - start;
    let rss_after_kib = rss_kib();
    sup.stop_all(Duration::from_secs(10)).await;
    Ok(Figures {
        rss_before_kib,
        rss_after_kib,
        cpu_in_window,
    })
}

/// Prints the table, or why it could not run.
pub fn run() {
    let result = (|| -> anyhow::Result<Figures> {
        // SAFETY: geteuid cannot fail.
        anyhow::ensure!(unsafe { libc::geteuid() } == 0, "needs root (cgroups)");
        let mount = cgroup::cgroup2_mount().context("no cgroup2 mount")?;
        let root = mount.join(format!("slate-bench-{}", std::process::id()));
        let figures = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(measure(root.clone()));
        // Remove the benchmark's cgroups whatever happened.
        cgroup::remove_tree(&root);
        figures
    })();
    match result {
        Ok(f) => {
            let mut t = Table::new();
            t.load_style(ASCII_MARKDOWN).set_header(vec![
                format!("supervisor, {SERVICES} services with a 1 s health check"),
                "value".into(),
            ]);
            t.add_row(vec![
                "RSS added by the services' tasks, logs and state (KiB)".to_owned(),
                f.rss_after_kib.saturating_sub(f.rss_before_kib).to_string(),
            ]);
            t.add_row(vec![
                format!("supervisor CPU over {} s idle (ms)", WINDOW.as_secs()),
                format!("{:.1}", f.cpu_in_window.as_secs_f64() * 1000.0),
            ]);
            t.add_row(vec![
                "supervisor CPU share of one core (%)".to_owned(),
                format!(
                    "{:.3}",
                    f.cpu_in_window.as_secs_f64() / WINDOW.as_secs_f64() * 100.0
                ),
            ]);
            println!("\n{t}");
        }
        Err(e) => println!("\nsupervisor benchmark skipped: {e:#}"),
    }
}
