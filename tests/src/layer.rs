//! A node booted with an extension layer a test builds for itself: test
//! programs (`slate-hog`, `slate-chaos`, `kubelet-standin`), Debian
//! packages and service definitions, with a generated control-plane
//! config the test may change first.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use slate_config::MachineConfig;
use slate_image::extensions::Extension;
use slate_image::tools::{Tool, Toolbox};

use crate::artifacts::Artifacts;
use crate::qemu::{Boot, Vm, VmOptions};
use crate::{api, configdrive};

/// How long the node may take to answer.
const TIMEOUT: Duration = Duration::from_secs(180);

/// The booted node: its VM, a client config for it and its endpoint.
pub struct LayerNode {
    pub vm: Vm,
    pub slateconfig: PathBuf,
    pub node: String,
    /// How the VM was started, for [`LayerNode::cut_power_and_boot`].
    pub opts: VmOptions,
    pub admin: std::sync::Arc<rustls::ClientConfig>,
    pub _dir: tempfile::TempDir,
}

impl LayerNode {
    /// The power cut: QEMU killed (SIGKILL) at once, then the same machine
    /// (disks, layer, config drive) started again; returns once it answers
    /// the admin. `n` names the console log of this boot.
    pub async fn cut_power_and_boot(&mut self, n: u32) -> anyhow::Result<()> {
        let console = self._dir.path().join(format!("console-{n}.log"));
        self.vm.kill();
        self.vm = Vm::start(&self.opts, Some(&console))?;
        api::wait_for_version(&mut self.vm, self.admin.clone(), TIMEOUT)
            .await
            .context("the node never answered after the power cut")?;
        self.node = self.vm.endpoint();
        Ok(())
    }
}

/// A test program built beside slatectl, as an extension.
pub fn program(name: &str) -> Extension {
    let path = crate::slatectl::path().with_file_name(name);
    assert!(path.is_file(), "{} (make build)", path.display());
    Extension {
        name: name.into(),
        path,
    }
}

/// Boots a node whose layer holds `programs`, the Debian packages
/// `debian` and the services `(name, yaml)`, with the generated
/// control-plane config as `tweak` leaves it; returns once it answers.
/// Panics on failure (test code).
pub async fn boot_with_layer(
    programs: Vec<Extension>,
    debian: &[&str],
    services: &[(&str, &str)],
    tweak: impl FnOnce(&mut MachineConfig),
) -> LayerNode {
    match try_boot(programs, debian, services, tweak, false, &[]).await {
        Ok(node) => node,
        Err(e) => panic!("{e:#}"),
    }
}

/// [`boot_with_layer`] with container image archives in the layer (and
/// containerd's `ctr` to import them).
pub async fn boot_with_images(
    programs: Vec<Extension>,
    debian: &[&str],
    archives: &[PathBuf],
) -> LayerNode {
    match try_boot(programs, debian, &[], |_| {}, false, archives).await {
        Ok(node) => node,
        Err(e) => panic!("{e:#}"),
    }
}

/// [`boot_with_layer`] with a blank system disk, on which the node makes
/// STATE and EPHEMERAL (its config and /var survive a power cut).
pub async fn boot_with_layer_on_disk(
    programs: Vec<Extension>,
    debian: &[&str],
    services: &[(&str, &str)],
    tweak: impl FnOnce(&mut MachineConfig),
) -> LayerNode {
    match try_boot(programs, debian, services, tweak, true, &[]).await {
        Ok(node) => node,
        Err(e) => panic!("{e:#}"),
    }
}

async fn try_boot(
    programs: Vec<Extension>,
    debian: &[&str],
    services: &[(&str, &str)],
    tweak: impl FnOnce(&mut MachineConfig),
    system_disk: bool,
    archives: &[PathBuf],
) -> anyhow::Result<LayerNode> {
    let a = Artifacts::find()?;
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let mut service_files = Vec::new();
    for (name, yaml) in services {
        let path = d.join(format!("{name}.yaml"));
        std::fs::write(&path, yaml)?;
        service_files.push(path);
    }
    let tools = Toolbox::find(
        &[Tool::Mksquashfs, Tool::Ldd, Tool::AptGet, Tool::DpkgDeb],
        None,
    )?;
    let debian: Vec<String> = debian.iter().map(|p| (*p).to_owned()).collect();
    let mut all =
        slate_image::extensions::debian(&tools, &debian, &Artifacts::dir().join("cache"))?;
    all.extend(programs);
    let work = d.join("work");
    std::fs::create_dir_all(&work)?;
    if !archives.is_empty() {
        all.push(slate_image::extensions::ctr(
            &tools,
            &Artifacts::dir().join("cache"),
        )?);
    }
    let layer = slate_image::extensions::build(&tools, &work, &all, &service_files, archives, 0)?;
    let initramfs = d.join("initramfs+layer.img");
    a.initramfs_with(&layer, &initramfs)?;

    let mut bundle = api::loopback_cluster("layer")?;
    tweak(&mut bundle.controlplane);
    let slateconfig = d.join("slateconfig");
    bundle.client.save(&slateconfig)?;
    let admin = api::context_tls(&bundle.client, "layer")?;
    let drive = d.join("cidata.iso");
    configdrive::build(&bundle.controlplane.to_yaml()?, &drive)?;
    let mut opts = VmOptions::new(Boot::Kernel {
        vmlinuz: a.vmlinuz.clone(),
        initramfs,
        cmdline: a.cmdline.clone(),
    });
    opts.config_drive = Some(drive);
    if system_disk {
        let disk = d.join("system.raw");
        crate::qemu::blank_disk(&disk)?;
        opts.system_disk = Some(disk);
    }
    let mut vm = Vm::start(&opts, Some(&d.join("console.log")))?;
    api::wait_for_version(&mut vm, admin.clone(), TIMEOUT)
        .await
        .context("the node with the layer never answered")?;
    let node = vm.endpoint();
    Ok(LayerNode {
        vm,
        slateconfig,
        node,
        opts,
        admin,
        _dir: dir,
    })
}
