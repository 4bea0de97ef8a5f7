//! `make bench`: a single control-plane node from QEMU's start to a
//! healthy etcd: boot, `Bootstrap`, then etcd's first healthy check as
//! the supervisor reports it (`ServiceList`), median of [`BOOTS`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use slate_client as client;
use slate_proto::machine::{BootstrapRequest, ServiceListRequest};

use crate::api;
use crate::artifacts::Artifacts;
use crate::bench::{median, print_seconds};
use crate::configdrive;
use crate::qemu::{Boot, Vm, VmOptions};

const BOOTS: usize = 3;
const TIMEOUT: Duration = Duration::from_secs(180);

struct Figures {
    qemu_to_api: f64,
    bootstrap_to_healthy: f64,
    qemu_to_healthy: f64,
}

async fn one(
    artifacts: &Artifacts,
    drive: &std::path::Path,
    admin: Arc<rustls::ClientConfig>,
) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let disk = dir.path().join("system.raw");
    crate::qemu::blank_disk(&disk)?;
    let mut opts = VmOptions::new(Boot::kernel_with_extensions(artifacts)?);
    opts.config_drive = Some(drive.to_owned());
    opts.system_disk = Some(disk);
    let mut vm = Vm::start(&opts, None)?;
    api::wait_for_version(&mut vm, admin.clone(), TIMEOUT).await?;
    let qemu_to_api = vm.started.elapsed().as_secs_f64();
    let target = slate_client::parse_target(&vm.endpoint())?;
    let mut machine = client::machine(client::connect(&target, admin).await?);
    // apid answers Version itself; machined may open its socket a moment
    // later: retry while it is not there yet.
    let asked = Instant::now();
    loop {
        match machine.bootstrap(BootstrapRequest {}).await {
            Ok(_) => break,
            Err(e) if e.code() == tonic::Code::Unavailable && asked.elapsed() < TIMEOUT => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e).context("bootstrap"),
        }
    }
    loop {
        let services = machine
            .service_list(ServiceListRequest { id: "etcd".into() })
            .await?
            .into_inner()
            .services;
        if services
            .first()
            .is_some_and(|s| s.state == "Running" && s.health == "healthy")
        {
            break;
        }
        anyhow::ensure!(
            asked.elapsed() < TIMEOUT,
            "etcd not healthy after {TIMEOUT:?}: {services:?}\n{}",
            vm.console_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Figures {
        qemu_to_api,
        bootstrap_to_healthy: asked.elapsed().as_secs_f64(),
        qemu_to_healthy: vm.started.elapsed().as_secs_f64(),
    })
}

pub async fn run() {
    let result = async {
        let artifacts = Artifacts::find()?;
        anyhow::ensure!(
            artifacts.extensions.is_some(),
            "the image has no extension layer (etcd)"
        );
        let work = tempfile::tempdir()?;
        let bundle = api::loopback_cluster("bench")?;
        let admin = api::context_tls(&bundle.client, "bench")?;
        let drive = work.path().join("cidata.iso");
        configdrive::build(&bundle.controlplane.to_yaml()?, &drive)?;
        let mut all = Vec::new();
        for _ in 0..BOOTS {
            all.push(one(&artifacts, &drive, admin.clone()).await?);
        }
        Ok::<_, anyhow::Error>(all)
    }
    .await;
    match result {
        Ok(all) => {
            let col = |f: fn(&Figures) -> f64| median(all.iter().map(f).collect());
            print_seconds(
                format!("single control-plane node, etcd (median of {BOOTS}, TCG)"),
                &[
                    ("QEMU start → API answers", col(|f| f.qemu_to_api)),
                    ("bootstrap → etcd healthy", col(|f| f.bootstrap_to_healthy)),
                    ("QEMU start → etcd healthy", col(|f| f.qemu_to_healthy)),
                ],
            );
        }
        Err(e) => println!("\netcd benchmark skipped: {e:#}"),
    }
}
