//! networkd: configures the node's network. See the library for the design.

use anyhow::Context;

fn main() {
    slate_machinery::logging::init();
    if let Err(e) = run() {
        tracing::error!("{e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let opts = slate_networkd::Options::from_env_with(|k| std::env::var(k).ok());
    // One thread: networkd waits on a few sockets and timers, and the
    // multi-thread runtime's worker stacks would be most of its memory.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("building the tokio runtime")?;
    match runtime.block_on(slate_networkd::run(opts)) {
        Ok(never) => match never {},
        Err(e) => Err(e).context("configuring the network"),
    }
}
