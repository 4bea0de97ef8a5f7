//! apid: Slate's API server. Started and restarted by init.

fn main() -> anyhow::Result<()> {
    slate_machinery::logging::init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .map_err(|e| e.context("starting the async runtime"))?;
    runtime.block_on(slate_apid::run(slate_apid::Paths::default()))
}
