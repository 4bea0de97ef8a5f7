//! Fault injection on a booted node (the security issue's suite):
//! - the core daemons killed with SIGKILL over and over: init starts each
//!   again, it serves after each kill, no zombie is left, the config holds
//!   the cluster the node booted with, and the API answers from outside;
//! - junk and floods on every listening port (50000/tcp, 3000/tcp,
//!   7445/tcp, 51820/udp): the ports still accept, the daemons' RSS grows
//!   by less than 10 MiB, the API answers;
//! - the power cut (QEMU killed) during `apply-config`'s STATE creation,
//!   its config write and right after it answered: the next boot has the
//!   old state (blank: maintenance, and a new apply succeeds) or the new
//!   one (the applied config), never a half one (a node that refuses
//!   both, or a lost config that was reported applied);
//! - the power cut while a service logs without pause onto EPHEMERAL: the
//!   next boot has its config, and the service's log holds whole lines
//!   only, those from before the cut followed by the new boot's.
//!
//! The kills and floods come from inside the node: `slate-chaos` (test-only, see
//! there) runs as an extension service, as nothing in the API kills a
//! daemon or reaches a port bound to loopback.
// Test code outside #[test] fns: a panic here fails the test.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slate_pki::tls;
use slate_tests::api;
use slate_tests::artifacts::Artifacts;
use slate_tests::layer::{LayerNode, boot_with_layer, boot_with_layer_on_disk, program};
use slate_tests::qemu::{Boot, Vm, VmOptions};
use slate_tests::slatectl::{run_as, text};

/// Kills of each daemon in `make test`. With init's backoff (250 ms
/// doubling to 5 s) the 100 the issue asks for take ~9 min per daemon
/// under TCG; `SLATE_CHAOS_TIMES=100` runs them.
const TIMES: u32 = 25;
/// Seconds of junk on each port.
const FLOOD_SECONDS: u32 = 5;
/// RSS a daemon may grow by under the floods.
const RSS_SLACK_KIB: u64 = 10 * 1024;
const EVERY: Duration = Duration::from_secs(2);

#[tokio::test]
#[ignore = "boots QEMU: run by `make test`"]
async fn killed_daemons_come_back_and_junk_on_every_port_leaves_the_node_answering() {
    let times: u32 = std::env::var("SLATE_CHAOS_TIMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(TIMES);
    let chaos = format!(
        "name: chaos\ncommand: [/usr/local/bin/slate-chaos, --times, '{times}', \
         --flood-seconds, '{FLOOD_SECONDS}', --state, /run/slate-chaos]\n"
    );
    let mut cluster_id: Option<String> = None;
    let LayerNode {
        vm,
        slateconfig,
        node,
        _dir,
        ..
    } = boot_with_layer(
        vec![program("slate-chaos")],
        &[],
        &[("chaos", &chaos)],
        |c| {
            cluster_id = c.cluster.id.clone();
            // Every port open: the mesh (51820/udp), the node's own
            // discovery service (3000/tcp) and the API balancer (7445/tcp).
            c.cluster.mesh.enabled = true;
            c.cluster.mesh.discovery.endpoint = None;
            c.cluster.api_balancer.enabled = true;
        },
    )
    .await;
    // From outside, while it runs: the node answers again after every gap.
    let started = Instant::now();
    let (mut answered, mut refused) = (0u32, 0u32);
    let mut log = String::new();
    let budget = Duration::from_secs(180 + 25 * u64::from(times));
    while !log.contains("chaos: done") {
        assert!(
            started.elapsed() < budget,
            "chaos unfinished after {:?}:\n{log}\n{}",
            started.elapsed(),
            vm.console_tail(60)
        );
        tokio::time::sleep(EVERY).await;
        let out = run_as(&slateconfig, &node, &["version"]);
        if out.status.success() {
            answered += 1;
            let out = run_as(&slateconfig, &node, &["logs", "chaos"]);
            if out.status.success() {
                log = String::from_utf8_lossy(&out.stdout).into_owned();
            }
        } else {
            refused += 1;
        }
    }
    let findings: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once("chaos: ").map(|(_, f)| f))
        .collect();
    eprintln!(
        "chaos ran {:?}; from outside, version answered {answered} times, failed {refused}:\n  {}",
        started.elapsed(),
        findings.join("\n  ")
    );
    assert!(!log.contains("chaos: done with failures"), "{log}");
    // The last summary of each daemon (a run cut by machined's restart may
    // have printed an earlier one).
    for daemon in ["machined", "networkd", "apid"] {
        let line = findings
            .iter()
            .rev()
            .find(|f| f.starts_with(&format!("{daemon} killed ")))
            .unwrap_or_else(|| panic!("no summary for {daemon}:\n{log}"));
        assert!(
            line.starts_with(&format!("{daemon} killed {times} times, back and serving"))
                && line.ends_with("zombies now: none"),
            "{line}"
        );
    }
    for port in ["tcp 50000", "tcp 3000", "tcp 7445"] {
        assert!(
            findings
                .iter()
                .any(|f| f.starts_with(port) && f.ends_with("accepting after: true")),
            "{port} after the flood:\n{log}"
        );
    }
    assert!(
        findings
            .iter()
            .any(|f| f.starts_with("udp 51820") && f.ends_with("still bound after: true")),
        "{log}"
    );
    for daemon in ["machined", "networkd", "apid"] {
        let (before, after) = findings
            .iter()
            .find_map(|f| {
                let rest = f.strip_prefix(&format!("rss {daemon} "))?;
                let (b, a) = rest.split_once(" KiB -> ")?;
                Some((
                    b.parse::<u64>().ok()?,
                    a.strip_suffix(" KiB")?.parse::<u64>().ok()?,
                ))
            })
            .unwrap_or_else(|| panic!("no RSS of {daemon}:\n{log}"));
        assert!(
            after <= before + RSS_SLACK_KIB,
            "{daemon} grew from {before} KiB to {after} KiB under the floods"
        );
    }

    // What a user checks afterwards: no zombie, the same config, answers.
    let out = run_as(&slateconfig, &node, &["processes", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let processes: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let zombies: Vec<_> = processes.iter().filter(|p| p["state"] == "Z").collect();
    assert!(zombies.is_empty(), "zombies: {zombies:?}");
    // The config is the one the node booted with (machined restarted
    // onto its published config each time, not onto nothing).
    let out = run_as(&slateconfig, &node, &["get", "machineconfig", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        config["config"]["cluster"]["id"],
        serde_json::json!(cluster_id),
        "{config}"
    );
    assert_eq!(
        config["config"]["cluster"]["mesh"]["enabled"], true,
        "{config}"
    );
    assert!(answered > 0);
}

const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

/// Where apply-config is cut: a console line machined prints on the way,
/// or `None` for right after slatectl reported success.
const CUTS: &[Option<&str>] = &[
    Some("creating the STATE partition on /dev/vda"),
    Some("STATE mounted"),
    Some("creating the EPHEMERAL partition on /dev/vda"),
    None,
];

fn boot(a: &Artifacts, disk: &Path, console: &Path) -> Vm {
    let mut opts = VmOptions::new(Boot::kernel(a));
    opts.system_disk = Some(disk.to_owned());
    Vm::start(&opts, Some(console)).expect("starting QEMU")
}

fn apply_insecure(node: &str, config: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(slate_tests::slatectl::path());
    cmd.args(["-n", node, "--insecure", "apply-config", "-f"])
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd
}

#[tokio::test]
#[ignore = "boots QEMU: run by `make test`"]
async fn a_power_cut_during_apply_config_leaves_the_old_or_the_new_state() {
    let a = Artifacts::find().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bundle = api::loopback_cluster("cut").unwrap();
    let cp = d.join("controlplane.yaml");
    std::fs::write(&cp, bundle.controlplane.to_yaml().unwrap()).unwrap();
    let admin = api::context_tls(&bundle.client, "cut").unwrap();
    let slateconfig = d.join("slateconfig");
    bundle.client.save(&slateconfig).unwrap();
    let insecure = Arc::new(tls::client_insecure().unwrap());
    let mut outcomes = Vec::new();

    for (i, cut) in CUTS.iter().enumerate() {
        let what = cut.unwrap_or("after apply-config answered");
        let disk = d.join(format!("system-{i}.raw"));
        slate_tests::qemu::blank_disk(&disk).unwrap();
        let mut vm = boot(&a, &disk, &d.join(format!("console-{i}a.log")));
        let v = api::wait_for_version(&mut vm, insecure.clone(), BOOT_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(v.maintenance, "a blank node:\n{}", vm.console_tail(40));
        let node = vm.endpoint();
        let mut apply = apply_insecure(&node, &cp).spawn().unwrap();
        if let Some(line) = cut {
            vm.wait_for_line(line, Instant::now() + BOOT_TIMEOUT, 60)
                .await
                .unwrap_or_else(|e| panic!("{e:#}"));
            // The power cut: QEMU killed (SIGKILL) at once.
            drop(vm);
            let _ = apply.wait();
        } else {
            let out = apply.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", text(&out));
            drop(vm);
        }

        let mut vm = boot(&a, &disk, &d.join(format!("console-{i}b.log")));
        let node = vm.endpoint();
        let outcome = match first_answer(&mut vm, &insecure, &admin).await {
            // Maintenance: the old state, blank, unless it is a refusal.
            Answer::Insecure(v) => {
                assert!(
                    cut.is_some(),
                    "cut {what}: the config apply-config reported applied is lost:\n{}",
                    vm.console_tail(60)
                );
                assert!(
                    v.maintenance && !v.maintenance_reason.contains("refuses"),
                    "cut {what}: neither old nor new: {:?}\n{}",
                    v.maintenance_reason,
                    vm.console_tail(60)
                );
                // And it is a blank node indeed: the next apply works.
                let out = apply_insecure(&node, &cp).output().unwrap();
                assert!(
                    out.status.success(),
                    "cut {what}: apply after the cut: {}\n{}",
                    text(&out),
                    vm.console_tail(60)
                );
                api::wait_for_version(&mut vm, admin.clone(), BOOT_TIMEOUT)
                    .await
                    .unwrap_or_else(|e| panic!("cut {what}: the admin is not served: {e:#}"));
                "old (blank; the next apply-config succeeded)"
            }
            Answer::Admin(v) => {
                assert!(!v.maintenance, "{v:?}");
                "new (the applied config, from STATE)"
            }
        };
        let out = run_as(&slateconfig, &node, &["get", "machineconfig", "-o", "json"]);
        assert!(out.status.success(), "{}", text(&out));
        let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(config["config"]["cluster"]["name"], "cut", "{config}");
        outcomes.push(format!("{what}: {outcome}"));
    }
    eprintln!(
        "power cuts during apply-config:\n  {}",
        outcomes.join("\n  ")
    );
}

enum Answer {
    /// Without a client certificate: maintenance mode.
    Insecure(slate_proto::machine::VersionResponse),
    /// Only with the admin's certificate: configured.
    Admin(slate_proto::machine::VersionResponse),
}

/// Whichever client the booted node answers first.
async fn first_answer(
    vm: &mut Vm,
    insecure: &Arc<rustls::ClientConfig>,
    admin: &Arc<rustls::ClientConfig>,
) -> Answer {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    vm.wait_for_line(api::READY_LINE, deadline, 80)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let target = slate_client::parse_target(&vm.endpoint()).unwrap();
    while Instant::now() < deadline {
        if let Ok(v) = api::version(&target, insecure.clone()).await {
            return Answer::Insecure(v);
        }
        if let Ok(v) = api::version(&target, admin.clone()).await {
            return Answer::Admin(v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("neither client answered; console:\n{}", vm.console_tail(80));
}

/// How long the service logs before the cut: past the kernel's 30 s
/// dirty-page expiry and ext4's 5 s commit, so part of its log is on the
/// disk and part still in memory when the power goes.
const TALK_BEFORE_CUT: Duration = Duration::from_secs(45);

#[tokio::test]
#[ignore = "boots QEMU: run by `make test`"]
async fn a_power_cut_while_a_service_logs_leaves_whole_lines_and_the_config() {
    let talker = "name: talker\ncommand: [/usr/local/bin/slate-hog, --talk]\n";
    let mut cluster_id: Option<String> = None;
    let mut n = boot_with_layer_on_disk(
        vec![program("slate-hog")],
        &[],
        &[("talker", talker)],
        |c| cluster_id = c.cluster.id.clone(),
    )
    .await;
    let logs = |n: &LayerNode| {
        let out = run_as(&n.slateconfig, &n.node, &["logs", "talker"]);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        n.vm.console_tail(200).contains("mounted on /var"),
        "the log must be on EPHEMERAL:\n{}",
        n.vm.console_tail(80)
    );
    tokio::time::sleep(TALK_BEFORE_CUT).await;
    let before = parse_talk(&logs(&n));
    let first_run = before.last().expect("the talker said nothing").0.clone();
    n.cut_power_and_boot(2)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));

    // The config came back from STATE.
    let out = run_as(
        &n.slateconfig,
        &n.node,
        &["get", "machineconfig", "-o", "json"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        config["config"]["cluster"]["id"].as_str(),
        cluster_id.as_deref(),
        "{config}"
    );
    // Until the new run has spoken: every line whole, the first run's a
    // gapless sequence (what reached the disk), then the new run's from 0.
    let deadline = Instant::now() + Duration::from_secs(60);
    let lines = loop {
        let lines = parse_talk(&logs(&n));
        if lines.iter().any(|(run, _)| *run != first_run) || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(EVERY).await;
    };
    let (old, new): (Vec<_>, Vec<_>) = lines.iter().partition(|(run, _)| *run == first_run);
    assert!(
        !old.is_empty(),
        "nothing the talker logged before the cut came back:\n{}",
        n.vm.console_tail(60)
    );
    assert!(!new.is_empty(), "the talker did not log after the boot");
    assert!(
        lines[..old.len()].iter().all(|(run, _)| *run == first_run),
        "the lines of the two boots are mixed"
    );
    for run in [&old, &new] {
        for pair in run.windows(2) {
            assert_eq!(pair[1].1, pair[0].1 + 1, "a gap or a repeat: {pair:?}");
        }
    }
    assert_eq!(new[0].1, 0, "the new run starts at 0");
    eprintln!(
        "power cut while logging: {} lines logged before it were seen, {} of them \
         (talk {} to {}) on disk after it; the new boot's run logged {} lines",
        before.len(),
        old.len(),
        old[0].1,
        old[old.len() - 1].1,
        new.len()
    );
}

/// `talk RUN SEQ xxx…` lines as (RUN, SEQ); panics on any other line,
/// which would be a torn or glued one.
fn parse_talk(text: &str) -> Vec<(String, u64)> {
    let filler = "x".repeat(120);
    text.lines()
        .map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            match f[..] {
                ["talk", run, seq, x] if run.len() == 8 && x == filler => (
                    run.to_owned(),
                    seq.parse().unwrap_or_else(|_| panic!("{line:?}")),
                ),
                _ => panic!("not a whole talker line: {line:?}"),
            }
        })
        .collect()
}
