//! `make bench`: see `slate_tests::bench` (boot, size, memory),
//! `slate_tests::etcdbench` (one node to a healthy etcd),
//! `slate_tests::joinbench` (joining with a token),
//! `slate_tests::installbench` (install, upgrade, rollback),
//! `slate_tests::netbench` (reconciler, networkd start),
//! `slate_tests::svcbench` (service supervisor),
//! `slate_tests::balancerbench` (API balancer against direct and haproxy)
//! and `slate_tests::meshbench` (WireGuard mesh against plain veth).
//! `slate-bench net` runs only the last four, which need no image;
//! `slate-bench etcd` only etcd's, `slate-bench join` only joining's,
//! `slate-bench install` only install and upgrade's,
//! `slate-bench mesh` only the mesh's.

fn main() -> anyhow::Result<()> {
    let only = std::env::args().nth(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match only.as_deref() {
        Some("etcd") => runtime.block_on(slate_tests::etcdbench::run()),
        Some("join") => runtime.block_on(slate_tests::joinbench::run()),
        Some("install") => runtime.block_on(slate_tests::installbench::run()),
        Some("net") => net(),
        Some("mesh") => slate_tests::meshbench::run(),
        Some(other) => {
            anyhow::bail!(
                "unknown benchmark {other:?} (net, mesh, etcd, join, install, or none for all)"
            )
        }
        None => {
            runtime.block_on(async {
                slate_tests::bench::run().await?;
                slate_tests::etcdbench::run().await;
                slate_tests::joinbench::run().await;
                slate_tests::installbench::run().await;
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
    slate_tests::meshbench::run();
}
