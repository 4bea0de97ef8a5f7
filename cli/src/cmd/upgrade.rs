//! `slatectl upgrade`, `rollback` and `reset`: the node's OS on its disk.
//!
//! `upgrade --image PATH` streams a release bundle (`_out/slate-*.bundle`)
//! to each node in turn (air-gapped nodes need nothing else); `--image URL`
//! has the node fetch it, with `--sha256` pinning it. With several nodes,
//! each is upgraded, rebooted and seen healthy on its new slot before the
//! next one starts, so a control plane keeps its etcd quorum.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use slate_client::Target;
use slate_proto::machine::{
    BootSlotsRequest, ResetRequest, RollbackRequest, UpgradeOptions, UpgradeRequest,
};
use tokio::io::AsyncReadExt as _;

use crate::{Global, connect};

/// Bytes per message: well under gRPC's 4 MiB default limit.
const CHUNK: usize = 1 << 20;
/// How long a node may take to come back healthy on its new slot.
const WAIT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RebootMode {
    Default,
    /// A full power cycle (Slate always reboots through the firmware, so
    /// this is the same as default today).
    Powercycle,
}

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// The release bundle: a file (streamed to the node) or an http(s) URL
    /// (fetched by the node; needs --sha256).
    #[arg(long, short = 'i', value_name = "PATH|URL")]
    pub image: String,
    /// The SHA-256 of the bundle at --image URL.
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// Write the new slot and arm it, but do not reboot.
    #[arg(long)]
    pub stage: bool,
    /// Upgrade even if the node's reboot would cost etcd its quorum.
    #[arg(long)]
    pub force: bool,
    #[arg(long, value_enum, default_value = "default")]
    pub reboot_mode: RebootMode,
    /// Do not wait for each node to come back healthy on its new slot.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    /// Leave etcd first (control-plane nodes).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub graceful: bool,
    /// Partitions to wipe (default: STATE,EPHEMERAL).
    #[arg(long, value_delimiter = ',', value_name = "LABELS")]
    pub wipe: Vec<String>,
    /// Reboot afterwards, into maintenance mode (the default).
    #[arg(long, conflicts_with = "shutdown")]
    pub reboot: bool,
    /// Power off afterwards.
    #[arg(long)]
    pub shutdown: bool,
}

pub async fn upgrade(global: &Global, args: UpgradeArgs) -> anyhow::Result<ExitCode> {
    let url = args.image.starts_with("http://") || args.image.starts_with("https://");
    let path = if url {
        anyhow::ensure!(
            args.sha256.is_some(),
            "--image {} is a URL: pin its SHA-256 with --sha256",
            args.image
        );
        None
    } else {
        anyhow::ensure!(
            args.sha256.is_none(),
            "--sha256 is for --image URL; a file's manifest carries its digests"
        );
        let path = PathBuf::from(&args.image);
        let manifest = slate_bundle::read_manifest(&path)
            .with_context(|| format!("--image {}", path.display()))?;
        println!("bundle: Slate {}", manifest.version);
        Some(path)
    };
    let session = connect::session(global)?;
    let mut ok = true;
    for target in &session.targets {
        let result = async {
            let channel = session.connect_to(target).await?;
            let options = UpgradeOptions {
                stage: args.stage,
                force: args.force,
                reboot_mode: match args.reboot_mode {
                    RebootMode::Default => "default",
                    RebootMode::Powercycle => "powercycle",
                }
                .into(),
                url: if url {
                    args.image.clone()
                } else {
                    String::new()
                },
                sha256: args.sha256.clone().unwrap_or_default(),
            };
            let answer = match &path {
                Some(path) => stream_file(channel, path, options).await?,
                None => connect::machine(channel)
                    .upgrade(futures::stream::iter([UpgradeRequest {
                        options: Some(options),
                        chunk: vec![],
                    }]))
                    .await
                    .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                    .into_inner(),
            };
            println!(
                "{target}: Slate {} written to slot {}{}",
                answer.version,
                answer.slot,
                if answer.rebooting {
                    "; rebooting"
                } else {
                    "; boots at the next reboot"
                }
            );
            if answer.rebooting && !args.no_wait {
                wait_healthy(&session, target, &answer.slot).await?;
            }
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = result {
            ok = false;
            eprintln!("error: {target}: {e:#}");
            // The next nodes wait: a rolling upgrade stops at the first
            // node that did not come back.
            break;
        }
    }
    Ok(crate::output::exit_code(ok))
}

/// Streams the bundle at `path` with a progress bar.
async fn stream_file(
    channel: slate_client::Conn,
    path: &std::path::Path,
    options: UpgradeOptions,
) -> anyhow::Result<slate_proto::machine::UpgradeResponse> {
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let bar = ProgressBar::new(size);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message("sending the bundle");
    let first = UpgradeRequest {
        options: Some(options),
        chunk: vec![],
    };
    let chunks = futures::stream::unfold((file, bar.clone()), |(mut file, bar)| async move {
        let mut buf = vec![0u8; CHUNK];
        match file.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                bar.inc(n as u64);
                Some((
                    UpgradeRequest {
                        options: None,
                        chunk: buf,
                    },
                    (file, bar),
                ))
            }
        }
    });
    let stream = futures::StreamExt::chain(futures::stream::iter([first]), chunks);
    let answer = connect::machine(channel).upgrade(stream).await;
    bar.finish_and_clear();
    Ok(answer
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner())
}

/// Waits until `target` answers again, booted from `slot` and with that
/// slot good (its health gate passed); says why when it came back on the
/// other slot.
async fn wait_healthy(
    session: &connect::Session,
    target: &Target,
    slot: &str,
) -> anyhow::Result<()> {
    let start = Instant::now();
    // Give the node time to go down before asking.
    tokio::time::sleep(Duration::from_secs(3)).await;
    while start.elapsed() < WAIT {
        if let Ok(channel) = session.connect(target).await
            && let Ok(r) = connect::machine(channel)
                .boot_slots(BootSlotsRequest {})
                .await
        {
            let slots = r.into_inner().slots;
            if let Some(active) = slots.iter().find(|s| s.active) {
                if active.slot == slot && active.state == "good" {
                    println!(
                        "{target}: healthy on slot {slot} after {}s",
                        start.elapsed().as_secs()
                    );
                    return Ok(());
                }
                // The old system may still answer while it shuts down:
                // only a verdict on the new slot ends the wait.
                if let Some(target_slot) = slots.iter().find(|s| s.slot == slot)
                    && target_slot.state == "failed"
                {
                    anyhow::bail!(
                        "came back on slot {} instead: slot {slot} failed ({})",
                        active.slot,
                        target_slot.reason
                    );
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    anyhow::bail!("not healthy on slot {slot} within {}s", WAIT.as_secs())
}

pub async fn rollback(global: &Global) -> anyhow::Result<ExitCode> {
    let session = connect::session(global)?;
    let (results, ok) = session
        .for_each(|channel| async move {
            connect::machine(channel)
                .rollback(RollbackRequest {})
                .await
                .map(|r| r.into_inner())
        })
        .await;
    for (target, r) in results {
        println!(
            "{target}: slot {} ({}) boots next; rebooting",
            r.slot, r.version
        );
    }
    Ok(crate::output::exit_code(ok))
}

pub async fn reset(global: &Global, args: ResetArgs) -> anyhow::Result<ExitCode> {
    let session = connect::session(global)?;
    let request = ResetRequest {
        graceful: args.graceful,
        wipe: args.wipe.clone(),
        shutdown: args.shutdown,
    };
    let (results, ok) = session
        .for_each(|channel| {
            let request = request.clone();
            async move {
                connect::machine(channel)
                    .reset(request)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await;
    for (target, r) in results {
        println!(
            "{target}: {} wiped at the next boot; {}",
            r.wiped.join(" and "),
            if args.shutdown {
                "powering off"
            } else {
                "rebooting into maintenance mode"
            }
        );
    }
    Ok(crate::output::exit_code(ok))
}
