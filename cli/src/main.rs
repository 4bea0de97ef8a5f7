//! slatectl: manage Slate nodes through their API.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    // `slatectl ... | head` must end quietly when the pipe closes, like
    // every Unix tool, not panic in println!.
    // SAFETY: resetting a signal disposition before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = slatectl::Cli::parse();
    match slatectl::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
