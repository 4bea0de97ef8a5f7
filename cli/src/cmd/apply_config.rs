//! `slatectl apply-config -f FILE [--mode …] [--dry-run]`: give nodes a new
//! machine config. With `--insecure` this configures a node in maintenance
//! mode, which accepts its first config without client certificates.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use slate_config::MAX_CONFIG_BYTES;
use slate_proto::machine::{ApplyConfigurationRequest, ApplyMode};

use crate::{Global, connect};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Live when possible, else save and reboot.
    #[default]
    Auto,
    /// Live only; refuse changes that need a reboot.
    NoReboot,
    /// Save and reboot.
    Reboot,
    /// Save for the next boot; change nothing now.
    Staged,
    /// Live, rolled back after --timeout unless another apply confirms it.
    Try,
}

impl From<ModeArg> for ApplyMode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Auto => Self::Auto,
            ModeArg::NoReboot => Self::NoReboot,
            ModeArg::Reboot => Self::Reboot,
            ModeArg::Staged => Self::Staged,
            ModeArg::Try => Self::Try,
        }
    }
}

#[derive(Debug, Args)]
pub struct ApplyConfigArgs {
    /// The machine config to apply.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// How the config takes effect.
    #[arg(short = 'm', long, value_enum, default_value_t)]
    pub mode: ModeArg,
    /// Show what would change and whether it needs a reboot; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --mode try: how long before the rollback (e.g. 30s, 2m).
    #[arg(long, value_parser = parse_duration, default_value = "1m")]
    pub timeout: Duration,
}

/// `90`, `90s`, `2m`, `1h`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 2m or 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s:?} is not a duration like 30s, 2m or 1h")),
    };
    if secs == 0 || secs > u64::from(u32::MAX) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs(secs))
}

pub async fn run(global: &Global, args: ApplyConfigArgs) -> anyhow::Result<ExitCode> {
    let data =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    anyhow::ensure!(
        data.len() <= MAX_CONFIG_BYTES,
        "{}: {} bytes is larger than a machine config may be ({MAX_CONFIG_BYTES} bytes)",
        args.file.display(),
        data.len()
    );
    let session = connect::session(global)?;
    if global.insecure && global.cert_fingerprint.is_none() {
        eprintln!(
            "WARNING: --insecure without --cert-fingerprint: the node is not authenticated, and \
             this config's secrets (CA keys, tokens) go to whoever answers at {}. Compare the \
             fingerprint the node prints on its console and pass --cert-fingerprint SHA256.",
            session
                .targets
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let request = ApplyConfigurationRequest {
        data,
        mode: ApplyMode::from(args.mode) as i32,
        dry_run: args.dry_run,
        try_timeout_seconds: u32::try_from(args.timeout.as_secs()).unwrap_or(u32::MAX),
    };
    let (results, ok) = session
        .for_each(|channel| {
            let request = request.clone();
            async move {
                connect::machine(channel)
                    .apply_configuration(request)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await;
    for (target, r) in results {
        println!("{target}: {}", r.summary);
        for change in &r.changes {
            println!("  {change}");
        }
        if !r.reboot_required_by.is_empty() {
            println!("  needs a reboot: {}", r.reboot_required_by.join(", "));
        }
    }
    Ok(crate::output::exit_code(ok))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        for bad in ["", "m", "5d", "0s", "-1"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
