//! slate-image: builds the Slate boot image.
//!
//! # Background
//! Slate boots two files everywhere: Debian's `vmlinuz` and an
//! `initramfs.zst` that holds the static `init`, the few modules needed
//! before the root image can be mounted, and `rootfs.sqsh`, the read-only
//! root with the daemons and an allow-listed module tree. `slate.iso` wraps
//! the pair in GRUB for BIOS and UEFI.
//!
//! # Design
//! Each step is a module named for what it does ([`kernel`], [`modules`],
//! [`rootfs`], [`initramfs`], [`iso`]); [`build`] runs them in order under a
//! spinner. Heavy lifting is done by Debian's tools (apt, dpkg-deb, depmod,
//! mksquashfs, zstd, grub-mkrescue), all checked up front by [`tools`].
//! The cpio writer is ours, so device nodes need no root. Every output is
//! reproducible from `SOURCE_DATE_EPOCH` and placed atomically.
//!
//! # Limitations
//! x86_64 only; the kernel comes from the host's apt sources (whatever
//! version they offer today), so "same inputs" includes the apt index.

pub mod bundle;
pub mod cpio;
pub mod exec;
pub mod extensions;
pub mod grub;
pub mod hostbin;
pub mod initramfs;
pub mod iso;
pub mod kernel;
pub mod modules;
pub mod progress;
pub mod report;
pub mod rootfs;
pub mod tools;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use slate_common::fs::{AtomicWriteError, copy_atomic, write_atomic};

use crate::progress::Progress;
use crate::report::{BuildReport, Output};
use crate::tools::{Tool, Toolbox};

/// Kernel command line for direct boot (`make run`, the QEMU tests).
pub const DEFAULT_CMDLINE: &str = "console=ttyS0,115200 quiet panic=-1";
/// Kernel command line in the ISO's grub.cfg: the VGA console too, with
/// the serial port last so it becomes `/dev/console`.
pub const ISO_CMDLINE: &str = "console=tty0 console=ttyS0,115200 quiet panic=-1";
/// Soft limit for `rootfs.sqsh`: above it the build warns. 12 MiB since
/// the Kubernetes control plane came into machined (docs/image.md).
pub const ROOTFS_BUDGET: u64 = 12 * 1024 * 1024;

/// Which Debian kernel to ship.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelFlavor {
    /// linux-image-cloud-amd64: VMs and clouds (virtio, Xen, Hyper-V, ENA).
    Cloud,
    /// linux-image-amd64: bare metal (AHCI, NVMe, SCSI, common NICs).
    Metal,
}

/// What to build and where.
#[derive(Debug, Clone)]
pub struct Options {
    pub kernel: KernelFlavor,
    /// Directory with the static init, machined, apid, networkd.
    pub bin_dir: PathBuf,
    /// Output directory; `work/` and `cache/` live below it.
    pub out: PathBuf,
    /// Appended to both kernel command lines.
    pub cmdline_extra: Option<String>,
    /// Build slate.iso (off for quick development loops).
    pub iso: bool,
    /// Debian packages to take extension programs from ([`extensions::DEBIAN`]).
    pub debian_extensions: Vec<String>,
    /// More extension programs (`kubelet=PATH`).
    pub extensions: Vec<extensions::Extension>,
    /// Service declarations for the extension layer
    /// ([`slate_config::extension_service`]).
    pub extension_services: Vec<PathBuf>,
    /// Container image archives (OCI or docker `.tar`) imported into
    /// containerd at boot.
    pub image_archives: Vec<PathBuf>,
    /// The release the image says it is (os-release, the bundle's
    /// manifest, `slatectl version`).
    pub version: String,
}

/// A failed build, naming the step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Tools(#[from] tools::ToolError),
    #[error("SOURCE_DATE_EPOCH={value:?} is not a number of seconds")]
    Epoch { value: String },
    #[error("preparing {path}")]
    Prepare {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("fetching the kernel")]
    Kernel(#[source] kernel::KernelError),
    #[error("reading the kernel's module index")]
    ModuleIndex(#[source] modules::LoadError),
    #[error("resolving modules")]
    Modules(#[source] modules::ModulesError),
    #[error("building rootfs.sqsh")]
    Rootfs(#[source] rootfs::RootfsError),
    #[error("building initramfs.zst")]
    Initramfs(#[source] initramfs::InitramfsError),
    #[error("building slate.iso")]
    Iso(#[source] iso::IsoError),
    #[error("building GRUB's images")]
    Grub(#[source] grub::GrubError),
    #[error("building slate.bundle")]
    Bundle(#[source] bundle::BundleBuildError),
    #[error("building the extension layer")]
    Extensions(#[source] extensions::ExtensionError),
    #[error("installing the outputs")]
    Install(#[source] AtomicWriteError),
    #[error("SOURCE_DATE_EPOCH={epoch} does not fit the 32-bit cpio mtime")]
    EpochRange { epoch: u64 },
}

/// The input binaries, by file name in `--bin-dir`.
pub const INPUT_BINARIES: &[&str] = &["init", "slated"];

/// The full kernel command line: `base` plus the user's extra arguments.
pub fn cmdline(base: &str, extra: Option<&str>) -> String {
    match extra.map(str::trim).filter(|e| !e.is_empty()) {
        Some(extra) => format!("{base} {extra}"),
        None => base.to_owned(),
    }
}

/// SOURCE_DATE_EPOCH from the environment, else the HEAD commit time, else
/// 0 (e.g. a repository with no commits, or no git).
pub fn source_date_epoch(
    env: Option<String>,
    git: impl FnOnce() -> Option<String>,
) -> Result<u64, Error> {
    if let Some(value) = env {
        return value.trim().parse().map_err(|_| Error::Epoch {
            value: value.clone(),
        });
    }
    Ok(git().and_then(|s| s.trim().parse().ok()).unwrap_or(0))
}

fn git_head_time() -> Option<String> {
    let out = Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn prepare(op: impl FnOnce(&Path) -> std::io::Result<()>, path: &Path) -> Result<(), Error> {
    op(path).map_err(|source| Error::Prepare {
        path: path.to_owned(),
        source,
    })
}

/// Builds every output into `opts.out` and returns what was built.
pub fn build(opts: &Options) -> Result<BuildReport, Error> {
    let mut needed = Tool::CORE.to_vec();
    if opts.iso {
        needed.extend_from_slice(Tool::ISO);
    }
    let tools = Toolbox::find(&needed, std::env::var_os("PATH"))?;
    tools::check_binaries(&opts.bin_dir, INPUT_BINARIES)?;
    let epoch = source_date_epoch(std::env::var("SOURCE_DATE_EPOCH").ok(), git_head_time)?;
    let epoch32 = u32::try_from(epoch).map_err(|_| Error::EpochRange { epoch })?;

    let work = opts.out.join("work");
    fresh_dir(&work)?;
    let direct_cmdline = cmdline(DEFAULT_CMDLINE, opts.cmdline_extra.as_deref());
    let iso_cmdline = cmdline(ISO_CMDLINE, opts.cmdline_extra.as_deref());

    let with_extensions = !opts.debian_extensions.is_empty()
        || !opts.extensions.is_empty()
        || !opts.extension_services.is_empty()
        || !opts.image_archives.is_empty();
    let mut progress = Progress::new(4 + usize::from(opts.iso) + usize::from(with_extensions));
    let kernel = progress.step("fetching the kernel", || {
        kernel::fetch(&tools, opts.kernel, &opts.out.join("cache")).map_err(Error::Kernel)
    })?;
    let ModulePlan {
        stage1,
        root_mods,
        late,
        links,
    } = ModulePlan::resolve(&kernel, opts.kernel)?;

    let rootfs = progress.step("building rootfs.sqsh", || {
        let mut shipped = root_mods.ordered.clone();
        shipped.sort();
        rootfs::build(
            &tools,
            &work,
            &rootfs::Inputs {
                bin_dir: &opts.bin_dir,
                kernel: &kernel,
                modules: &shipped,
                late_modules: &late,
                link_modules: &links,
                version: &opts.version,
                epoch,
            },
        )
        .map_err(Error::Rootfs)
    })?;
    let initramfs = progress.step("building initramfs.zst", || {
        initramfs::build(
            &tools,
            &work,
            &initramfs::Inputs {
                init: &opts.bin_dir.join("init"),
                rootfs: &rootfs,
                release: &kernel.release,
                modules_dir: &kernel.modules_dir(),
                modules: &stage1.ordered,
            },
            epoch32,
        )
        .map_err(Error::Initramfs)
    })?;
    let extensions = if with_extensions {
        Some(progress.step("building extensions.cpio", || {
            build_extensions(&tools, &work, opts, epoch)
        })?)
    } else {
        None
    };
    let iso = if opts.iso {
        Some(progress.step("building slate.bundle and slate.iso", || {
            let grub = grub::build_assets(
                tools.path(Tool::GrubMkimage),
                tools.path(Tool::GrubPc),
                tools.path(Tool::GrubEfi),
                &work,
            )
            .map_err(Error::Grub)?;
            let efi_img =
                bundle::efi_image(&tools, &work, &grub.efi, epoch).map_err(Error::Bundle)?;
            let vmlinuz = kernel.vmlinuz();
            let parts = bundle::Parts {
                vmlinuz: &vmlinuz,
                initramfs: &initramfs,
                extensions: extensions.as_deref(),
                grub: &grub,
                efi_img: &efi_img,
            };
            bundle::write(
                &work.join("slate.bundle"),
                &work.join("iso").join("boot"),
                &parts,
                &opts.version,
                &direct_cmdline,
                epoch,
            )
            .map_err(Error::Bundle)?;
            iso::build(
                &tools,
                &work,
                &kernel.vmlinuz(),
                &initramfs,
                extensions.as_deref(),
                &iso_cmdline,
                epoch,
            )
            .map_err(Error::Iso)
        })?)
    } else {
        None
    };

    let outputs = progress.step("installing outputs", || {
        install(
            opts,
            &kernel.vmlinuz(),
            &initramfs,
            &rootfs,
            extensions.as_deref(),
            iso.as_deref(),
            &direct_cmdline,
        )
        .map_err(Error::Install)
    })?;
    warn_over_budget(&outputs);
    Ok(BuildReport {
        kernel_release: kernel.release.clone(),
        kernel_package: kernel.package.clone(),
        kernel_version: kernel.version.clone(),
        epoch,
        stage1_modules: stage1.ordered.len(),
        rootfs_modules: root_mods.ordered.len(),
        outputs,
        timings: progress.into_timings(),
    })
}

/// `work`, emptied: nothing of an earlier build leaks into this one.
fn fresh_dir(work: &Path) -> Result<(), Error> {
    if work.exists() {
        prepare(|p| fs::remove_dir_all(p), work)?;
    }
    prepare(|p| fs::create_dir_all(p), work)
}

/// The extensions archive: the Debian packages asked for, fetched into the
/// cache, then the local extension directories.
fn build_extensions(
    tools: &Toolbox,
    work: &Path,
    opts: &Options,
    epoch: u64,
) -> Result<PathBuf, Error> {
    let cache = opts.out.join("cache");
    let mut all =
        extensions::debian(tools, &opts.debian_extensions, &cache).map_err(Error::Extensions)?;
    all.extend(opts.extensions.iter().cloned());
    if !opts.image_archives.is_empty() {
        all.push(extensions::ctr(tools, &cache).map_err(Error::Extensions)?);
    }
    extensions::build(
        tools,
        work,
        &all,
        &opts.extension_services,
        &opts.image_archives,
        epoch,
    )
    .map_err(Error::Extensions)
}

/// Which of the kernel's modules go where: stage 1 (the initramfs), the
/// rootfs, and the two lists init loads after switch_root.
struct ModulePlan {
    stage1: modules::Resolution,
    root_mods: modules::Resolution,
    /// Loaded after switch_root; those stage 1 loads already are left out.
    late: Vec<String>,
    /// The link drivers, loaded last.
    links: Vec<String>,
}

impl ModulePlan {
    fn resolve(kernel: &kernel::Kernel, flavor: KernelFlavor) -> Result<Self, Error> {
        let index =
            modules::ModuleIndex::load(&kernel.modules_dir()).map_err(Error::ModuleIndex)?;
        let stage1 = index
            .resolve(&modules::stage1(flavor))
            .map_err(Error::Modules)?;
        let root_mods = index
            .resolve(&modules::rootfs_allow(flavor))
            .map_err(Error::Modules)?;
        let late: Vec<String> = index
            .resolve(modules::LATE)
            .map_err(Error::Modules)?
            .ordered
            .into_iter()
            .filter(|m| !stage1.ordered.contains(m))
            .collect();
        let links: Vec<String> = index
            .resolve(modules::LINK_DRIVERS)
            .map_err(Error::Modules)?
            .ordered
            .into_iter()
            .filter(|m| !stage1.ordered.contains(m) && !late.contains(m))
            .collect();
        for name in stage1.missing.iter().chain(&root_mods.missing) {
            tracing::warn!("module {name} is not in kernel {}: skipped", kernel.release);
        }
        tracing::debug!(builtin = ?stage1.builtin, "built-in stage-1 modules");
        Ok(Self {
            stage1,
            root_mods,
            late,
            links,
        })
    }
}

fn warn_over_budget(outputs: &[Output]) {
    if let Some(sqsh) = outputs.iter().find(|o| o.name == "rootfs.sqsh")
        && sqsh.bytes > ROOTFS_BUDGET
    {
        tracing::warn!(
            "rootfs.sqsh is {:.2} MiB, over the {} MiB budget: trim modules::ROOTFS_ALLOW",
            sqsh.bytes as f64 / 1048576.0,
            ROOTFS_BUDGET / 1048576
        );
    }
}

/// Places the outputs atomically, each only after everything was built, so
/// a failed build leaves the previous set untouched.
fn install(
    opts: &Options,
    vmlinuz: &Path,
    initramfs: &Path,
    rootfs: &Path,
    extensions: Option<&Path>,
    iso: Option<&Path>,
    cmdline: &str,
) -> Result<Vec<Output>, AtomicWriteError> {
    let mut files: Vec<(&'static str, &Path)> = vec![
        ("vmlinuz", vmlinuz),
        ("initramfs.zst", initramfs),
        ("rootfs.sqsh", rootfs),
    ];
    if let Some(ext) = extensions {
        files.push(("extensions.cpio", ext));
    } else {
        // A stale layer would be booted with a newer base.
        let _ = fs::remove_file(opts.out.join("extensions.cpio"));
    }
    let bundle = iso.map(|iso| iso.with_file_name("slate.bundle"));
    if let Some(bundle) = &bundle {
        files.push(("slate.bundle", bundle));
    }
    if let Some(iso) = iso {
        files.push(("slate.iso", iso));
    } else {
        // A stale ISO would boot an older kernel and initramfs.
        let _ = fs::remove_file(opts.out.join("slate.iso"));
    }
    let mut outputs = Vec::new();
    for (name, src) in files {
        let dest = opts.out.join(name);
        copy_atomic(src, &dest, 0o644)?;
        outputs.push(output(name, dest));
    }
    let dest = opts.out.join("cmdline");
    write_atomic(&dest, format!("{cmdline}\n").as_bytes(), 0o644)?;
    outputs.push(output("cmdline", dest));
    Ok(outputs)
}

fn output(name: &'static str, path: PathBuf) -> Output {
    let bytes = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    Output { name, path, bytes }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_prefers_env_then_git_then_zero() {
        assert_eq!(
            source_date_epoch(Some("42".into()), || Some("7".into())).unwrap(),
            42
        );
        assert_eq!(source_date_epoch(None, || Some("7\n".into())).unwrap(), 7);
        assert_eq!(source_date_epoch(None, || None).unwrap(), 0);
        assert!(matches!(
            source_date_epoch(Some("yesterday".into()), || None),
            Err(Error::Epoch { .. })
        ));
    }

    #[test]
    fn extra_cmdline_is_appended() {
        assert_eq!(cmdline(DEFAULT_CMDLINE, None), DEFAULT_CMDLINE);
        assert_eq!(cmdline("a b", Some("  ")), "a b");
        assert_eq!(cmdline("a b", Some("slate.debug=1")), "a b slate.debug=1");
    }

    #[test]
    fn iso_cmdline_ends_on_the_serial_console() {
        let last = ISO_CMDLINE.split(' ').rfind(|a| a.starts_with("console="));
        assert_eq!(last, Some("console=ttyS0,115200"));
    }
}
