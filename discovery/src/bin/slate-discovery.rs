//! slate-discovery: the mesh discovery service (see `slate_discovery::service`).

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let args = slate_discovery::cli::Args::parse();
    slate_machinery::logging::init();
    match slate_discovery::cli::main(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("slate-discovery: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
