//! `make bench`: see `slate_tests::bench` (boot, size, memory) and
//! `slate_tests::netbench` (reconciler, networkd start) and
//! `slate_tests::svcbench` (service supervisor). `slate-bench net` runs
//! only the last two, which need no image.

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() != Some("net") {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(slate_tests::bench::run())?;
    }
    slate_tests::netbench::run();
    slate_tests::svcbench::run();
    Ok(())
}
