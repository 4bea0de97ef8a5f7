//! `slatectl validate -f FILE [--mode metal|cloud]`: every problem of a
//! machine config at once, each with its path, line and column.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use slate_config::{MachineConfig, Mode};

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Machine config to check.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Where the node runs: `metal` also requires machine.install.disk.
    #[arg(short = 'm', long, default_value = "cloud", value_parser = |s: &str| s.parse::<Mode>())]
    pub mode: Mode,
}

pub fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let name = args.file.display().to_string();
    match MachineConfig::parse_bytes(&bytes, &name, args.mode) {
        Ok(config) => {
            println!(
                "{name} is valid for {} mode: {} node of cluster {}",
                match args.mode {
                    Mode::Cloud => "cloud",
                    Mode::Metal => "metal",
                },
                config.machine.kind,
                config.cluster.name
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
