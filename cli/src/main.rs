//! slatectl: manage Slate nodes through their API.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = slatectl::Cli::parse();
    match slatectl::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
