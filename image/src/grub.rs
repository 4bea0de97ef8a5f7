//! GRUB's boot images for an installed disk, made with `grub-mkimage`.
//!
//! The node has no grub-install: machined writes these files itself
//! (machined/src/install/grub.rs). `boot.img` goes into the MBR and
//! `core.img` into the BIOS boot partition (partition 2); `BOOTX64.EFI` is
//! the UEFI loader on the EFI partition (partition 1).
//!
//! Both images get the prefix [`PREFIX`], `(,gpt3)/grub`: GRUB 2.06's
//! kern/main.c (`grub_set_prefix_and_root`) completes a device that starts
//! with `,` with the drive GRUB was loaded from (BIOS: the drive in DL;
//! UEFI: the disk of the loaded image's partition), so GRUB finds BOOT,
//! partition 3, on its own disk whatever number the firmware gives it, and
//! no `search` (which could find another disk's BOOT) is needed.
//!
//! Every module GRUB needs is embedded: BOOT holds no module directory, so
//! nothing on it can be mixed with another GRUB version's modules.
//!
//! Reproducible: grub-mkimage 2.06 embeds no time (the PE header of the
//! EFI image carries a fixed 2015-01-01 stamp), so the same GRUB package
//! and module list give the same bytes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::exec::{self, ExecError};

/// Where GRUB looks for grub.cfg and grubenv: `/grub` on partition 3 of
/// the disk it was loaded from.
pub const PREFIX: &str = "(,gpt3)/grub";

/// Modules in core.img (i386-pc): the disk, GPT, ext4 (`ext2`), the menu
/// and its script (`normal`, `configfile` for `source`, `test`, `echo`),
/// the boot-once switch (`loadenv`), the Linux loader and the serial
/// console. grub-mkimage adds their dependencies.
pub const PC_MODULES: &[&str] = &[
    "biosdisk",
    "part_gpt",
    "ext2",
    "normal",
    "configfile",
    "loadenv",
    "test",
    "echo",
    "linux",
    "search",
    "serial",
    "terminal",
];

/// Modules in BOOTX64.EFI: as for BIOS, with the EFI disk driver built
/// into the EFI kernel, `fat` for the EFI partition, and video drivers so
/// the kernel gets a framebuffer (UEFI has no text mode).
pub const EFI_MODULES: &[&str] = &[
    "part_gpt",
    "ext2",
    "fat",
    "normal",
    "configfile",
    "loadenv",
    "test",
    "echo",
    "linux",
    "search",
    "serial",
    "terminal",
    "efi_gop",
    "all_video",
];

/// The largest core.img GRUB's BIOS setup embeds: it must fit below
/// 0x78000 when loaded at 0x9000 (util/setup.c), 888 sectors. The BIOS
/// boot partition (1 MiB) has room for more.
pub const CORE_IMG_MAX: u64 = 0x78000 - 0x9000;

/// The three files machined writes to the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrubAssets {
    /// The MBR boot code (512 bytes), from grub-pc-bin.
    pub boot_img: PathBuf,
    /// i386-pc core.img, for the BIOS boot partition.
    pub core_img: PathBuf,
    /// x86_64-efi image, for `/EFI/BOOT/BOOTX64.EFI`.
    pub efi: PathBuf,
}

/// A failure to make the GRUB images.
#[derive(Debug, thiserror::Error)]
pub enum GrubError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("making {path}")]
    Mkimage {
        path: PathBuf,
        #[source]
        source: ExecError,
    },
    #[error("{path} is not GRUB's 512-byte MBR boot code")]
    BootImg { path: PathBuf },
    #[error(
        "{path} is {size} bytes; GRUB's BIOS loader takes at most {CORE_IMG_MAX}: embed fewer modules"
    )]
    CoreTooLarge { path: PathBuf, size: u64 },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> GrubError {
    let path = path.to_owned();
    move |source| GrubError::Io { op, path, source }
}

/// Makes the images in `<work>/grub/` from the module directories
/// `pc_dir` (`/usr/lib/grub/i386-pc`) and `efi_dir`
/// (`/usr/lib/grub/x86_64-efi`) with the `grub_mkimage` program.
pub fn build_assets(
    grub_mkimage: &Path,
    pc_dir: &Path,
    efi_dir: &Path,
    work: &Path,
) -> Result<GrubAssets, GrubError> {
    let dir = work.join("grub");
    fs::create_dir_all(&dir).map_err(io("creating", &dir))?;

    let boot_img = dir.join("boot.img");
    let source = pc_dir.join("boot.img");
    let boot = fs::read(&source).map_err(io("reading", &source))?;
    if boot.len() != 512 || boot[510..] != [0x55, 0xaa] {
        return Err(GrubError::BootImg { path: source });
    }
    write_new(&boot_img, |tmp| {
        fs::write(tmp, &boot).map_err(io("writing", tmp))
    })?;

    let core_img = dir.join("core.img");
    write_new(&core_img, |tmp| {
        mkimage(grub_mkimage, "i386-pc", pc_dir, tmp, PC_MODULES)
    })?;
    let size = fs::metadata(&core_img)
        .map_err(io("reading the size of", &core_img))?
        .len();
    if size > CORE_IMG_MAX {
        return Err(GrubError::CoreTooLarge {
            path: core_img,
            size,
        });
    }

    let efi = dir.join("BOOTX64.EFI");
    write_new(&efi, |tmp| {
        mkimage(grub_mkimage, "x86_64-efi", efi_dir, tmp, EFI_MODULES)
    })?;
    Ok(GrubAssets {
        boot_img,
        core_img,
        efi,
    })
}

/// Runs `make` on a temporary name beside `path`, then renames it: an
/// interrupted build leaves no truncated image under the real name.
fn write_new(
    path: &Path,
    make: impl FnOnce(&Path) -> Result<(), GrubError>,
) -> Result<(), GrubError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    let tmp = PathBuf::from(name);
    let made = make(&tmp).and_then(|()| fs::rename(&tmp, path).map_err(io("renaming", &tmp)));
    if made.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    made
}

/// `grub-mkimage` for one platform.
fn mkimage(
    grub_mkimage: &Path,
    format: &str,
    module_dir: &Path,
    out: &Path,
    modules: &[&str],
) -> Result<(), GrubError> {
    exec::run(&mut mkimage_command(
        grub_mkimage,
        format,
        module_dir,
        out,
        modules,
    ))
    .map(drop)
    .map_err(|source| GrubError::Mkimage {
        path: out.to_owned(),
        source,
    })
}

fn mkimage_command(
    grub_mkimage: &Path,
    format: &str,
    module_dir: &Path,
    out: &Path,
    modules: &[&str],
) -> Command {
    let mut cmd = Command::new(grub_mkimage);
    cmd.args(["-O", format, "-d"])
        .arg(module_dir)
        .args(["-p", PREFIX, "-o"])
        .arg(out)
        .args(modules);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line() {
        let cmd = mkimage_command(
            Path::new("/usr/bin/grub-mkimage"),
            "i386-pc",
            Path::new("/usr/lib/grub/i386-pc"),
            Path::new("/w/core.img"),
            PC_MODULES,
        );
        assert_eq!(
            exec::cmdline(&cmd),
            "/usr/bin/grub-mkimage -O i386-pc -d /usr/lib/grub/i386-pc -p (,gpt3)/grub \
             -o /w/core.img biosdisk part_gpt ext2 normal configfile loadenv test echo \
             linux search serial terminal"
        );
    }

    #[test]
    fn missing_boot_img_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = build_assets(
            Path::new("/nonexistent/grub-mkimage"),
            &dir.path().join("pc"),
            &dir.path().join("efi"),
            dir.path(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("pc/boot.img"), "{err}");
    }

    /// Two builds give the same bytes, and the images are what machined
    /// expects. Needs grub-common, grub-pc-bin and grub-efi-amd64-bin
    /// (`make deps`).
    #[test]
    fn builds_reproducibly() {
        let mkimage = Path::new("/usr/bin/grub-mkimage");
        let pc = Path::new("/usr/lib/grub/i386-pc");
        let efi = Path::new("/usr/lib/grub/x86_64-efi");
        if !(mkimage.exists() && pc.is_dir() && efi.is_dir()) {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(!ci, "GRUB is not installed (make deps)");
            eprintln!("SKIPPED builds_reproducibly: GRUB not installed (make deps)");
            return;
        }
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = build_assets(mkimage, pc, efi, one.path()).unwrap();
        let b = build_assets(mkimage, pc, efi, two.path()).unwrap();
        let read = |p: &Path| fs::read(p).unwrap();
        for (x, y) in [
            (&a.boot_img, &b.boot_img),
            (&a.core_img, &b.core_img),
            (&a.efi, &b.efi),
        ] {
            assert!(read(x) == read(y), "{} differs between builds", x.display());
        }
        assert_eq!(read(&a.boot_img).len(), 512);
        let core = read(&a.core_img);
        assert!(core.len() > 1024 && core.len() as u64 <= CORE_IMG_MAX);
        let efi = read(&a.efi);
        assert!(efi.starts_with(b"MZ"));
        // The prefix as given, for kern/main.c to complete (core.img is
        // compressed, the EFI image is not).
        assert!(efi.windows(PREFIX.len()).any(|w| w == PREFIX.as_bytes()));
        let leftovers: Vec<_> = fs::read_dir(one.path().join("grub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
