//! `make run`: boots one Slate node in QEMU with a generated config and
//! prints the slatectl command that reaches it. Ctrl-C stops the VM.

use std::path::PathBuf;

use anyhow::Context as _;
use slate_config::clientconfig::ClientConfig;
use slate_config::generate::{self, Options};
use slate_tests::artifacts::Artifacts;
use slate_tests::configdrive;
use slate_tests::qemu::{self, Boot, VmOptions};

fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::var("SLATE_RUN_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(50000);
    let iso = std::env::var("SLATE_RUN_ISO").is_ok_and(|v| v == "1");
    let artifacts = Artifacts::find()?;
    let dir = Artifacts::dir().join("run");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    // Keep the cluster across runs so the client config stays valid.
    let controlplane = dir.join("controlplane.yaml");
    let slateconfig = dir.join("slateconfig");
    if !controlplane.exists() || !slateconfig.exists() {
        let bundle = generate::generate(&Options {
            cluster_name: "slate-dev".into(),
            endpoint: "https://127.0.0.1:6443".into(),
            additional_sans: vec!["127.0.0.1".into()],
            client_endpoints: vec![format!("127.0.0.1:{port}")],
            install_disk: None,
            secrets: None,
        })?;
        let write = |path: &PathBuf, text: String| {
            slate_common::fs::write_atomic(path, text.as_bytes(), 0o600)
                .with_context(|| format!("writing {}", path.display()))
        };
        write(&controlplane, bundle.controlplane.to_yaml()?)?;
        write(&dir.join("worker.yaml"), bundle.worker.to_yaml()?)?;
        bundle.client.save(&slateconfig)?;
    } else {
        // Point the existing context at this run's port.
        let mut client = ClientConfig::load(&slateconfig)?;
        for ctx in client.contexts.values_mut() {
            ctx.endpoints = vec![format!("127.0.0.1:{port}")];
        }
        client.save(&slateconfig)?;
    }
    let drive = dir.join("cidata.iso");
    let user_data = std::fs::read_to_string(&controlplane)?;
    configdrive::build(&user_data, &drive)?;

    let boot = if iso {
        Boot::Iso {
            iso: artifacts.iso.clone(),
            uefi: false,
        }
    } else if artifacts.extensions.is_some() {
        // containerd, runc and etcd with it, as the ISO boots.
        Boot::kernel_with_extensions(&artifacts)?
    } else {
        Boot::kernel(&artifacts)
    };
    let mut opts = VmOptions::new(boot);
    opts.config_drive = Some(drive);
    // A sparse system disk that outlives the VM: the node keeps its config
    // on STATE there, so `apply-config` and `reboot` behave as on a server.
    let disk = dir.join("system.raw");
    if !disk.exists() {
        std::fs::File::create(&disk)
            .and_then(|f| f.set_len(4 << 30))
            .with_context(|| format!("creating {}", disk.display()))?;
    }
    opts.system_disk = Some(disk);
    // slatectl is built beside this binary by `make build`.
    let slatectl = slate_tests::slatectl::path();
    eprintln!(
        "Booting Slate in QEMU ({}); Ctrl-C stops it. In another terminal:",
        qemu::accel()
    );
    eprintln!(
        "    {} --config {} version",
        slatectl.display(),
        slateconfig.display()
    );
    eprintln!();
    let status = qemu::command(&opts, port, "stdio")
        .status()
        .context("running qemu-system-x86_64")?;
    eprintln!("QEMU exited: {status}");
    Ok(())
}
