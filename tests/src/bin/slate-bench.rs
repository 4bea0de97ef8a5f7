//! `make bench`: see `slate_tests::bench` (boot, size, memory),
//! `slate_tests::etcdbench` (one node to a healthy etcd),
//! `slate_tests::netbench` (reconciler, networkd start) and
//! `slate_tests::svcbench` (service supervisor). `slate-bench net` runs
//! only the last two, which need no image; `slate-bench etcd` only etcd's.

fn main() -> anyhow::Result<()> {
    let only = std::env::args().nth(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match only.as_deref() {
        Some("etcd") => runtime.block_on(slate_tests::etcdbench::run()),
        Some("net") => {
            slate_tests::netbench::run();
            slate_tests::svcbench::run();
        }
        Some(other) => anyhow::bail!("unknown benchmark {other:?} (net, etcd, or none for all)"),
        None => {
            runtime.block_on(async {
                slate_tests::bench::run().await?;
                slate_tests::etcdbench::run().await;
                anyhow::Ok(())
            })?;
            slate_tests::netbench::run();
            slate_tests::svcbench::run();
        }
    }
    Ok(())
}
