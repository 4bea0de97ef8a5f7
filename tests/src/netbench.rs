//! `make bench`, network part (root only, network namespaces):
//! - the reconciler's writes and time per pass with 100 addresses and 100
//!   routes on a veth link, in a namespace of a thread's own. What it
//!   shows: a pass costs netlink writes in proportion to what changed, not
//!   to what is configured;
//! - networkd's start to its first address configured (the ready file,
//!   written right after the address is in place): static from `ip=`, and
//!   by DHCP against dnsmasq in a neighbouring namespace.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};
use comfy_table::{Table, presets::ASCII_MARKDOWN};
use slate_config::Network;
use slate_networkd::reconcile::{Reconciler, Rtnetlink};

use crate::netns::{self, Netns};

const ADDRESSES: usize = 100;
const ROUTES: usize = 100;

struct Pass {
    what: &'static str,
    writes: usize,
    ms: f64,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// veth0 with `ADDRESSES` addresses (10.100.0.1/16 …) and `ROUTES` routes
/// (10.200.N.0/24 via 10.100.0.254); `shift` moves the first address.
fn network(shift: bool) -> anyhow::Result<Network> {
    let mut yaml = String::from("interfaces:\n  - interface: veth0\n    addresses:\n");
    for i in 0..ADDRESSES {
        let host = if i == 0 && shift { 250 } else { i + 1 };
        yaml.push_str(&format!(
            "      - 10.100.{}.{}/16\n",
            host / 250,
            host % 250 + 1
        ));
    }
    yaml.push_str("    routes:\n");
    for i in 0..ROUTES {
        yaml.push_str(&format!(
            "      - {{network: 10.200.{i}.0/24, gateway: 10.100.0.254}}\n"
        ));
    }
    slate_config::yaml::from_str(&yaml).map_err(|e| anyhow::anyhow!("{}", e.message))
}

async fn measure(r: &mut Reconciler, net: &Network, what: &'static str) -> anyhow::Result<Pass> {
    let start = Instant::now();
    let report = r.pass(net).await?;
    if !report.failed.is_empty() {
        bail!("{what}: {:?}", report.failed);
    }
    Ok(Pass {
        what,
        writes: report.done.len(),
        ms: start.elapsed().as_secs_f64() * 1000.0,
    })
}

fn passes() -> anyhow::Result<Vec<Pass>> {
    std::thread::spawn(|| -> anyhow::Result<Vec<Pass>> {
        // SAFETY: unshare affects this thread only; it owns no socket yet.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            bail!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
        }
        ip(&[
            "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
        ])?;
        let dir = tempfile::tempdir()?;
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(async {
                let (conn, handle, _) = rtnetlink::new_connection()?;
                tokio::spawn(conn);
                let mut r =
                    Reconciler::new(Rtnetlink::new(handle, "/sys"), dir.path().join("owned"));
                let (all, shifted) = (network(false)?, network(true)?);
                Ok(vec![
                    measure(&mut r, &all, "first pass (everything to add)").await?,
                    measure(&mut r, &all, "nothing changed").await?,
                    measure(&mut r, &shifted, "one address changed").await?,
                ])
            })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the benchmark thread panicked"))?
}

/// Runs of each startup measurement.
const STARTS: usize = 5;

/// Seconds from spawning networkd to its ready file, `STARTS` times, each
/// in fresh namespaces; `dhcp` against dnsmasq, else a static `ip=`.
fn startups(networkd: &Path, dhcp: bool) -> Vec<f64> {
    (0..STARTS)
        .map(|_| {
            let (mut ns, client, cmdline) = if dhcp {
                let (ns, client) = Netns::with_dhcp_server("sbd", &[]);
                (ns, client, "console=ttyS0 quiet\n".to_owned())
            } else {
                let tag = format!("sbs{}", std::process::id() % 100_000);
                let client = format!("{tag}c");
                let cmdline = format!("ip=10.98.0.5::10.98.0.1:255.255.255.0:node1:{client}:off\n");
                (Netns::new(&tag), client, cmdline)
            };
            let start = Instant::now();
            ns.start_networkd(networkd, &client, &cmdline);
            ns.wait_ready();
            start.elapsed().as_secs_f64()
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0])
}

/// The startup table; `Err` says why it could not run.
fn startup_table() -> anyhow::Result<Table> {
    if let Some(why) = netns::skip_reason() {
        bail!("{why}");
    }
    // Built beside this binary by `make build`.
    let networkd = std::env::current_exe()?
        .parent()
        .context("the benchmark's directory")?
        .join("networkd");
    anyhow::ensure!(
        networkd.exists(),
        "no {}: run `make build`",
        networkd.display()
    );
    let rows = std::panic::catch_unwind(|| {
        [
            ("static address from ip=", startups(&networkd, false)),
            ("DHCP lease from dnsmasq", startups(&networkd, true)),
        ]
    })
    .map_err(|_| anyhow::anyhow!("a namespace step failed (see above)"))?;
    let mut t = Table::new();
    t.load_style(ASCII_MARKDOWN).set_header(vec![
        format!("networkd start → address configured (median of {STARTS})"),
        "median (ms)".into(),
        "min (ms)".into(),
    ]);
    for (what, times) in rows {
        let (median, min) = median(times);
        t.add_row(vec![
            what.to_owned(),
            format!("{:.1}", median * 1000.0),
            format!("{:.1}", min * 1000.0),
        ]);
    }
    Ok(t)
}

/// Prints the tables, or why they could not be made.
pub fn run() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("\nnetwork benchmark skipped: needs root (network namespaces)");
        return;
    }
    match startup_table() {
        Ok(t) => println!("\n{t}"),
        Err(e) => println!("\nnetworkd startup benchmark failed: {e:#}"),
    }
    match passes() {
        Ok(passes) => {
            let mut t = Table::new();
            t.load_style(ASCII_MARKDOWN).set_header(vec![
                format!("reconcile pass, {ADDRESSES} addresses + {ROUTES} routes on veth"),
                "netlink operations".into(),
                "time (ms)".into(),
            ]);
            for p in passes {
                t.add_row(vec![
                    p.what.to_owned(),
                    p.writes.to_string(),
                    format!("{:.1}", p.ms),
                ]);
            }
            println!("\n{t}");
        }
        Err(e) => println!("\nnetwork benchmark failed: {e:#}"),
    }
}
