//! `slate.iso`: a hybrid BIOS + UEFI ISO made by `grub-mkrescue`.
//!
//! Reproducibility: grub-mkrescue stamps the ISO with the current time
//! (`--modification-date`), which is also the volume UUID GRUB searches for.
//! We override both through xorriso options after `--` (`-volume_date uuid`
//! and `all_file_dates`), and GRUB still finds its root on BIOS and UEFI.
//! The EFI boot image inside is a FAT image made by `mformat`, which in
//! mtools 4.0.32 picks a random volume serial number with no option to fix
//! it from grub-mkrescue; after the build we overwrite those 4 bytes in the
//! FAT boot sector (found via the El Torito catalog) with a value derived
//! from the epoch. Nothing checksums them (GPT CRCs cover only the tables).

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::exec::{self, ExecError};
use crate::tools::{Tool, Toolbox};

const SECTOR: u64 = 2048;

/// A failed ISO step.
#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("running grub-mkrescue for {path}")]
    Mkrescue {
        path: PathBuf,
        #[source]
        source: ExecError,
    },
    #[error("{path}: {what} (cannot fix the EFI image's FAT serial number)")]
    Layout { path: PathBuf, what: &'static str },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> IsoError {
    let path = path.to_owned();
    move |source| IsoError::Io { op, path, source }
}

/// The GRUB menu. Both consoles are listed; the kernel makes the last one
/// `/dev/console`, so init's output goes to the serial port.
pub fn grub_cfg(cmdline: &str, extensions: bool) -> String {
    // The extension layer is another initramfs segment, loaded first: the
    // kernel finds the next archive after an uncompressed one, but not
    // after a zstd-compressed one.
    let initrd = if extensions {
        "/boot/extensions.cpio /boot/initramfs.zst"
    } else {
        "/boot/initramfs.zst"
    };
    format!(
        "insmod all_video\n\
         serial --unit=0 --speed=115200\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         set timeout=1\n\
         \n\
         menuentry \"Slate\" {{\n\
         \x20   linux /boot/vmlinuz {cmdline}\n\
         \x20   initrd {initrd}\n\
         }}\n"
    )
}

/// Builds `<work>/slate.iso` and returns its path.
pub fn build(
    tools: &Toolbox,
    work: &Path,
    vmlinuz: &Path,
    initramfs: &Path,
    extensions: Option<&Path>,
    cmdline: &str,
    epoch: u64,
) -> Result<PathBuf, IsoError> {
    let staging = work.join("iso");
    let boot = staging.join("boot");
    fs::create_dir_all(boot.join("grub")).map_err(io("creating", &boot))?;
    fs::copy(vmlinuz, boot.join("vmlinuz")).map_err(io("copying", vmlinuz))?;
    fs::copy(initramfs, boot.join("initramfs.zst")).map_err(io("copying", initramfs))?;
    if let Some(ext) = extensions {
        fs::copy(ext, boot.join("extensions.cpio")).map_err(io("copying", ext))?;
    }
    let cfg = boot.join("grub/grub.cfg");
    fs::write(&cfg, grub_cfg(cmdline, extensions.is_some())).map_err(io("writing", &cfg))?;

    let iso = work.join("slate.iso");
    // xorriso 1.5.4 takes `all_file_dates =0` as "unset" and stamps the
    // directories with the current time, so the epoch-0 fallback (no git
    // history) becomes 1 s past the epoch here.
    let epoch = epoch.max(1);
    let date = format!("{}00", utc_stamp(epoch));
    exec::run(
        tools
            .command(Tool::GrubMkrescue)
            .env("SOURCE_DATE_EPOCH", epoch.to_string())
            .arg("-o")
            .arg(&iso)
            .arg(&staging)
            .arg("--")
            .args(["-volume_date", "uuid", &date])
            .args(["-volume_date", "all_file_dates", &format!("={epoch}")]),
    )
    .map_err(|source| IsoError::Mkrescue {
        path: iso.clone(),
        source,
    })?;
    fix_efi_serial(&iso, epoch as u32)?;
    Ok(iso)
}

/// `YYYYMMDDhhmmss` in UTC, the form xorriso's `-volume_date uuid` takes.
pub fn utc_stamp(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Finds the UEFI El Torito boot image and sets its FAT volume serial.
fn fix_efi_serial(iso: &Path, serial: u32) -> Result<(), IsoError> {
    let layout = |what| IsoError::Layout {
        path: iso.to_owned(),
        what,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(iso)
        .map_err(io("opening", iso))?;
    let mut read_at = |offset: u64, buf: &mut [u8]| {
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(buf))
            .map_err(io("reading", iso))
    };
    // Sector 17: the El Torito boot record volume descriptor.
    let mut brvd = [0u8; 2048];
    read_at(17 * SECTOR, &mut brvd)?;
    if &brvd[1..6] != b"CD001" || !brvd[7..].starts_with(b"EL TORITO SPECIFICATION") {
        return Err(layout("no El Torito boot record at sector 17"));
    }
    let catalog = u32::from_le_bytes(brvd[0x47..0x4b].try_into().expect("4 bytes"));
    let mut cat = [0u8; 2048];
    read_at(u64::from(catalog) * SECTOR, &mut cat)?;
    let lba = efi_image_lba(&cat).ok_or_else(|| layout("no UEFI entry in the boot catalog"))?;
    let offset = u64::from(lba) * SECTOR;
    let mut boot = [0u8; 512];
    read_at(offset, &mut boot)?;
    // FAT12/16 keep the serial at 0x27, FAT32 at 0x43; the extended boot
    // signature 0x29 just before it says the field is there.
    let field = if boot[510..512] != [0x55, 0xaa] {
        return Err(layout("EFI boot image has no FAT boot sector"));
    } else if boot[0x26] == 0x29 && boot[0x36..0x3a] == *b"FAT1" {
        0x27
    } else if boot[0x42] == 0x29 && boot[0x52..0x57] == *b"FAT32" {
        0x43
    } else {
        return Err(layout("EFI boot image is not FAT12/16/32"));
    };
    file.seek(SeekFrom::Start(offset + field))
        .and_then(|_| file.write_all(&serial.to_le_bytes()))
        .and_then(|_| file.sync_all())
        .map_err(io("patching", iso))
}

/// The load LBA of the first bootable entry in a section for platform 0xEF
/// (UEFI). Catalog records are 32 bytes: a validation entry, the default
/// (BIOS) entry, then section headers (0x90/0x91, platform at byte 1) each
/// followed by their entries (0x88 = bootable, LBA at byte 8).
fn efi_image_lba(catalog: &[u8]) -> Option<u32> {
    let mut platform = None;
    for record in catalog.chunks_exact(32).skip(2) {
        match record[0] {
            0x90 | 0x91 => platform = Some(record[1]),
            0x88 if platform == Some(0xef) => {
                return Some(u32::from_le_bytes(record[8..12].try_into().ok()?));
            }
            0x00 if record.iter().all(|&b| b == 0) => break,
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_calendar_dates() {
        assert_eq!(utc_stamp(0), "19700101000000");
        assert_eq!(utc_stamp(1_700_000_000), "20231114221320");
        assert_eq!(utc_stamp(951_782_400), "20000229000000");
    }

    #[test]
    fn grub_cfg_boots_kernel_with_cmdline() {
        let cfg = grub_cfg("console=tty0 console=ttyS0,115200 quiet", false);
        assert!(cfg.contains("set timeout=1\n"));
        assert!(cfg.contains("menuentry \"Slate\" {\n"));
        assert!(cfg.contains("    linux /boot/vmlinuz console=tty0 console=ttyS0,115200 quiet\n"));
        assert!(cfg.contains("    initrd /boot/initramfs.zst\n"));
        let cfg = grub_cfg("quiet", true);
        assert!(cfg.contains("    initrd /boot/extensions.cpio /boot/initramfs.zst\n"));
    }

    #[test]
    fn catalog_walk_finds_the_uefi_section() {
        let mut cat = vec![0u8; 2048];
        cat[0] = 0x01; // validation entry
        cat[32] = 0x88; // default BIOS entry
        cat[32 + 8..32 + 12].copy_from_slice(&2973u32.to_le_bytes());
        cat[64] = 0x91; // final section header
        cat[65] = 0xef; // UEFI
        cat[96] = 0x88;
        cat[96 + 8..96 + 12].copy_from_slice(&72u32.to_le_bytes());
        assert_eq!(efi_image_lba(&cat), Some(72));
        cat[65] = 0x00; // x86 BIOS section instead
        assert_eq!(efi_image_lba(&cat), None);
    }
}
