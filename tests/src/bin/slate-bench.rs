//! `make bench`: see `slate_tests::bench` (boot, size, memory),
//! `slate_tests::etcdbench` (one node to a healthy etcd),
//! `slate_tests::netbench` (reconciler, networkd start),
//! `slate_tests::svcbench` (service supervisor) and
//! `slate_tests::balancerbench` (API balancer against direct and haproxy).
//! `slate-bench net` runs only the last three, which need no image;
//! `slate-bench etcd` only etcd's.

fn main() -> anyhow::Result<()> {
    let only = std::env::args().nth(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match only.as_deref() {
        Some("etcd") => runtime.block_on(slate_tests::etcdbench::run()),
        Some("net") => net(),
        Some(other) => anyhow::bail!("unknown benchmark {other:?} (net, etcd, or none for all)"),
        None => {
            runtime.block_on(async {
                slate_tests::bench::run().await?;
                slate_tests::etcdbench::run().await;
                anyhow::Ok(())
            })?;
            net();
        }
    }
    Ok(())
}

/// The benchmarks that need no image.
fn net() {
    slate_tests::netbench::run();
    slate_tests::svcbench::run();
    slate_tests::balancerbench::run();
}
