//! `slatectl machineconfig patch FILE --patch @p.yaml`: a machine config
//! with patches applied, validated, on stdout or into a file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use slate_common::fs::write_atomic;
use slate_config::{MachineConfig, Mode, patch};

use super::patch_args;

#[derive(Debug, Subcommand)]
pub enum MachineConfigCommand {
    /// Apply patches (strategic merge or RFC 6902) to a machine config.
    Patch(PatchArgs),
}

#[derive(Debug, Args)]
pub struct PatchArgs {
    /// The machine config to patch.
    pub file: PathBuf,
    /// A patch: @FILE or inline YAML/JSON. A mapping merges, a list is RFC 6902. Repeatable.
    #[arg(
        short = 'p',
        long = "patch",
        required = true,
        value_name = "@FILE|PATCH"
    )]
    pub patches: Vec<String>,
    /// Write the result here (atomically, mode 0600) instead of to stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Validate the result for this mode (`cloud` or `metal`).
    #[arg(short = 'm', long, default_value = "cloud", value_parser = |s: &str| s.parse::<Mode>())]
    pub mode: Mode,
}

pub fn run(cmd: MachineConfigCommand) -> anyhow::Result<ExitCode> {
    let MachineConfigCommand::Patch(args) = cmd;
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let config = MachineConfig::parse_bytes(&bytes, &args.file.display().to_string(), args.mode)?;
    let patches = patch_args::load(&args.patches, "--patch")?;
    let patched = patch::apply(&config, &patches, args.mode)?;
    let yaml = patched.to_yaml()?;
    match &args.output {
        Some(path) => {
            // A config holds private keys.
            write_atomic(path, yaml.as_bytes(), 0o600)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{yaml}"),
    }
    Ok(ExitCode::SUCCESS)
}
