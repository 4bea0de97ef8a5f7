//! `make bench`: see `slate_tests::bench` (boot, size, memory) and
//! `slate_tests::netbench` (reconciler). `slate-bench net` runs only the
//! second, which needs no image.

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() != Some("net") {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(slate_tests::bench::run())?;
    }
    slate_tests::netbench::run();
    Ok(())
}
