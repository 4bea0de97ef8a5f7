//! `slatectl completion bash|zsh|fish`: a completion script generated
//! from the same clap definition the commands are parsed with, so it never
//! falls behind them.

use std::process::ExitCode;

use clap::{Args, CommandFactory as _};
use clap_complete::Shell;

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    pub shell: Shell,
}

pub fn run(args: &CompletionArgs) -> anyhow::Result<ExitCode> {
    let mut command = crate::Cli::command();
    clap_complete::generate(args.shell, &mut command, "slatectl", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
