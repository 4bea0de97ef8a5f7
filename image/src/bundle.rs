//! The release bundle in `_out/slate.bundle`: what `slatectl upgrade`
//! streams and what the ISO carries unpacked in `/boot` for installing.
//!
//! Besides the kernel, initramfs and layer it holds the bootloader the
//! node writes as data at install: GRUB's images ([`crate::grub`]) and
//! `efi.img`, a small FAT filesystem with `/EFI/BOOT/BOOTX64.EFI`, made here
//! with mtools because the node has no mkfs.vfat.

use std::fs;
use std::path::{Path, PathBuf};

use slate_bundle::Part;

use crate::exec::{self, ExecError};
use crate::grub::GrubAssets;
use crate::tools::{Tool, Toolbox};

/// The FAT image's size: GRUB's EFI image (~1 MiB with its modules) and
/// room to spare; the EFI partition is 100 MiB, the image need not fill it.
const EFI_IMG_SECTORS: u64 = 16 * 2048;

#[derive(Debug, thiserror::Error)]
pub enum BundleBuildError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("making efi.img")]
    Mtools(#[source] ExecError),
    #[error(transparent)]
    Bundle(#[from] slate_bundle::BundleError),
}

/// `<work>/efi.img`: FAT with `/EFI/BOOT/BOOTX64.EFI`. Its volume serial
/// is derived from `epoch` (mformat's is random otherwise).
pub fn efi_image(
    tools: &Toolbox,
    work: &Path,
    bootx64: &Path,
    epoch: u64,
) -> Result<PathBuf, BundleBuildError> {
    let img = work.join("efi.img");
    let _ = fs::remove_file(&img);
    let mtools = |tool: Tool, args: &[&str]| {
        let mut cmd = tools.command(tool);
        cmd.env("SOURCE_DATE_EPOCH", epoch.to_string())
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(args);
        exec::run(&mut cmd)
            .map(drop)
            .map_err(BundleBuildError::Mtools)
    };
    let image = img.to_string_lossy().into_owned();
    let serial = format!("{:08x}", epoch as u32);
    mtools(
        Tool::Mformat,
        &[
            "-i",
            &image,
            "-C",
            "-T",
            &EFI_IMG_SECTORS.to_string(),
            "-h",
            "2",
            "-s",
            "32",
            "-N",
            &serial,
            "-v",
            "EFI",
            "::",
        ],
    )?;
    mtools(Tool::Mmd, &["-i", &image, "::/EFI", "::/EFI/BOOT"])?;
    let src = bootx64.to_string_lossy().into_owned();
    mtools(
        Tool::Mcopy,
        &["-i", &image, "-m", &src, "::/EFI/BOOT/BOOTX64.EFI"],
    )?;
    Ok(img)
}

/// The parts of a bundle, by where the build left them.
pub struct Parts<'a> {
    pub vmlinuz: &'a Path,
    pub initramfs: &'a Path,
    pub extensions: Option<&'a Path>,
    pub grub: &'a GrubAssets,
    pub efi_img: &'a Path,
}

impl Parts<'_> {
    pub fn list(&self) -> Vec<(Part, &Path)> {
        let mut files = vec![
            (Part::Kernel, self.vmlinuz),
            (Part::Initramfs, self.initramfs),
        ];
        if let Some(ext) = self.extensions {
            files.push((Part::Extensions, ext));
        }
        files.extend([
            (Part::BiosBoot, self.grub.boot_img.as_path()),
            (Part::BiosCore, self.grub.core_img.as_path()),
            (Part::Efi, self.efi_img),
        ]);
        files
    }
}

/// Writes the bundle to `out`, and its parts with `manifest.json` into
/// `unpacked` (the ISO's `/boot`), returning the manifest.
pub fn write(
    out: &Path,
    unpacked: &Path,
    parts: &Parts<'_>,
    version: &str,
    cmdline: &str,
    epoch: u64,
) -> Result<slate_bundle::Manifest, BundleBuildError> {
    let files = parts.list();
    let manifest = slate_bundle::write(out, version, cmdline, &files, epoch)?;
    let io = |op, path: &Path| {
        let path = path.to_owned();
        move |source| BundleBuildError::Io { op, path, source }
    };
    fs::create_dir_all(unpacked).map_err(io("creating", unpacked))?;
    for (part, path) in &files {
        let dest = unpacked.join(part.file_name());
        if !dest.exists() {
            fs::copy(path, &dest).map_err(io("copying", path))?;
        }
    }
    let json = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    let dest = unpacked.join(slate_bundle::MANIFEST);
    fs::write(&dest, json).map_err(io("writing", &dest))?;
    Ok(manifest)
}
