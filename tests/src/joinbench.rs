//! `make bench`: joining by token, median of [`JOINS`] under TCG. One
//! control-plane VM (etcd bootstrapped) stays up; each run boots a fresh
//! VM with only `slate.join=` and a LAN address on its kernel command
//! line and measures
//! - QEMU start → the machine is listed as pending (`ListMachines`),
//! - `AcceptMachine` → its apid answers the admin with the certificate
//!   the control plane's trust service signed (`Version` over mTLS).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use slate_proto::join::join_service_client::JoinServiceClient;
use slate_proto::join::{
    AcceptMachineRequest, CreateTokenRequest, ForgetMachineRequest, ListMachinesRequest,
};
use tonic::transport::Channel;

use crate::api;
use crate::artifacts::Artifacts;
use crate::bench::{median, print_seconds};
use crate::cluster::{Cluster, LAN, lan_ip};
use crate::qemu::Boot;

const JOINS: usize = 3;
const TIMEOUT: Duration = Duration::from_secs(240);

struct Figures {
    boot_to_registered: f64,
    accept_to_api: f64,
}

async fn join_service(
    cluster: &Cluster,
    admin: Arc<rustls::ClientConfig>,
) -> anyhow::Result<JoinServiceClient<Channel>> {
    let target = slate_client::parse_target(&cluster.endpoint(0))?;
    Ok(JoinServiceClient::new(
        slate_client::connect(&target, admin).await?,
    ))
}

/// Node `i` of `cluster` joins; the figures of that run.
async fn one(
    cluster: &mut Cluster,
    i: usize,
    admin: Arc<rustls::ClientConfig>,
) -> anyhow::Result<Figures> {
    let mut join = join_service(cluster, admin.clone()).await?;
    let token = join
        .create_token(CreateTokenRequest {
            role: "worker".into(),
            ttl_seconds: 600,
            auto_accept: false,
            config_patch: format!(
                "machine:\n  network:\n    interfaces:\n      - interface: eth0\n        dhcp: true\n  kubelet:\n    nodeIP:\n      validSubnets: [{LAN}]\n"
            ),
        })
        .await?
        .into_inner();
    let name = format!("joiner-{i}");
    let node = &mut cluster.nodes[i];
    node.opts.config_drive = None;
    node.opts.extra_cmdline = Some(format!(
        "ip={}::::{name}:eth1:off {}",
        lan_ip(i),
        token.kernel_arg
    ));
    let started = cluster.start(i)?.started;
    let id = loop {
        let machines = join
            .list_machines(ListMachinesRequest {})
            .await?
            .into_inner();
        if let Some(m) = machines.machines.iter().find(|m| m.hostname == name) {
            break m.id.clone();
        }
        anyhow::ensure!(
            started.elapsed() < TIMEOUT,
            "{name} did not register: {}",
            cluster.vm(i).console_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let boot_to_registered = started.elapsed().as_secs_f64();
    let accepted = Instant::now();
    join.accept_machine(AcceptMachineRequest {
        id: id.clone(),
        ..Default::default()
    })
    .await?;
    api::wait_for_version(cluster.vm(i), admin, TIMEOUT)
        .await
        .with_context(|| format!("{name} after accept"))?;
    let accept_to_api = accepted.elapsed().as_secs_f64();
    cluster.power_off(i);
    join.forget_machine(ForgetMachineRequest { id }).await?;
    Ok(Figures {
        boot_to_registered,
        accept_to_api,
    })
}

pub async fn run() {
    let result = async {
        let artifacts = Artifacts::find()?;
        let work = tempfile::tempdir()?;
        let boot = Boot::kernel_with_extensions(&artifacts)?;
        let mut cluster = Cluster::create_with_workers(1, JOINS, work.path(), &boot)?;
        let admin = api::context_tls(&cluster.bundle.client, "slate-cluster")?;
        cluster.start(0)?;
        api::wait_for_version(cluster.vm(0), admin.clone(), TIMEOUT).await?;
        let target = slate_client::parse_target(&cluster.endpoint(0))?;
        let mut machine =
            slate_client::machine(slate_client::connect(&target, admin.clone()).await?);
        machine
            .bootstrap(slate_proto::machine::BootstrapRequest {})
            .await
            .context("bootstrap")?;
        // Tokens are kept in etcd: ready once one can be listed.
        let asked = Instant::now();
        loop {
            let mut join = join_service(&cluster, admin.clone()).await?;
            match join
                .list_tokens(slate_proto::join::ListTokensRequest {})
                .await
            {
                Ok(_) => break,
                Err(_) if asked.elapsed() < TIMEOUT => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e).context("etcd never answered"),
            }
        }
        let mut all = Vec::new();
        for i in 1..=JOINS {
            all.push(one(&mut cluster, i, admin.clone()).await?);
        }
        Ok::<_, anyhow::Error>(all)
    }
    .await;
    match result {
        Ok(all) => {
            let col = |f: fn(&Figures) -> f64| median(all.iter().map(f).collect());
            print_seconds(
                format!("joining with a token (median of {JOINS}, TCG)"),
                &[
                    (
                        "QEMU start → registered (pending)",
                        col(|f| f.boot_to_registered),
                    ),
                    (
                        "accept → API answers with its CA-signed certificate",
                        col(|f| f.accept_to_api),
                    ),
                ],
            );
        }
        Err(e) => println!("\njoin benchmark skipped: {e:#}"),
    }
}
