//! `make cluster NODES=3`: boots N control-plane nodes in QEMU on one
//! private LAN (the same harness as the multi-node tests), prints how to
//! reach them, and keeps them running until Ctrl-C. Each run is a new
//! cluster under `_out/cluster/`.

use anyhow::Context as _;
use slate_tests::artifacts::Artifacts;
use slate_tests::cluster::Cluster;
use slate_tests::qemu::{self, Boot};

fn main() -> anyhow::Result<()> {
    let nodes: usize = std::env::var("NODES")
        .ok()
        .map(|n| n.parse().context("NODES must be a number"))
        .transpose()?
        .unwrap_or(3);
    anyhow::ensure!((1..=9).contains(&nodes), "NODES must be 1 to 9");
    let artifacts = Artifacts::find()?;
    let dir = Artifacts::dir().join("cluster");
    // A new cluster each time: old disks would hold another cluster's etcd.
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let boot = if artifacts.extensions.is_some() {
        Boot::kernel_with_extensions(&artifacts)?
    } else {
        Boot::kernel(&artifacts)
    };
    let mut cluster = Cluster::create(nodes, &dir, &boot)?;
    for i in 0..nodes {
        cluster.start(i)?;
    }
    let slatectl = slate_tests::slatectl::path();
    let config = cluster.slateconfig.display().to_string();
    eprintln!(
        "{nodes} nodes booting in QEMU ({}); consoles in {}. Ctrl-C stops them all.",
        qemu::accel(),
        dir.display()
    );
    for (i, node) in cluster.nodes.iter().enumerate() {
        eprintln!(
            "  {}  LAN {}  apid {}  etcd {}",
            node.name,
            node.ip,
            cluster.endpoint(i),
            cluster.etcd_url(i).unwrap_or_default()
        );
    }
    eprintln!("\nStart etcd on the first, the others join it:");
    eprintln!(
        "    {} --config {config} -n {} bootstrap",
        slatectl.display(),
        cluster.endpoint(0)
    );
    eprintln!(
        "    {} --config {config} -n {} etcd members",
        slatectl.display(),
        cluster.endpoint(0)
    );
    // Until Ctrl-C (the terminal sends it to QEMU too: same process group)
    // or until a node powers off, which ends the others (dropped VMs).
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
        for i in 0..nodes {
            if !cluster.vm(i).is_running() {
                eprintln!("{} powered off; stopping the others", cluster.nodes[i].name);
                return Ok(());
            }
        }
    }
}
