//! `make bench`: see `slate_tests::bench` (boot, size, memory) and
//! `slate_tests::netbench` (reconciler, networkd start) and
//! `slate_tests::svcbench` (service supervisor) and
//! `slate_tests::balancerbench` (API balancer against direct and haproxy).
//! `slate-bench net` runs only the last three, which need no image.

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() != Some("net") {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(slate_tests::bench::run())?;
    }
    slate_tests::netbench::run();
    slate_tests::svcbench::run();
    slate_tests::balancerbench::run();
    Ok(())
}
