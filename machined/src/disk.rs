//! The system disk: its STATE and EPHEMERAL partitions.
//!
//! Layout (GPT; see docs/install.md): 1 EFI (100 MiB), 2 BIOS boot
//! (1 MiB), 3 BOOT (1000 MiB, the two boot slots), 4 META (1 MiB), written
//! by `install/`; STATE is partition 5, 100 MiB, ext4 labelled `STATE`.
//! EPHEMERAL is partition 6, the rest of the disk, ext4 labelled
//! `EPHEMERAL`, mounted on /var: containerd's images, etcd's data and the
//! logs live there and survive reboots. Every partition is in the table
//! from the first write, so installing later moves nothing.
//!
//! Disks are found by label with libblkid, never by name. A disk is only
//! partitioned when it is empty (libblkid finds no partition table and no
//! filesystem on it) or when the config says `install.wipe: true`: a disk
//! with somebody else's data is never touched.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::mount::MsFlags;
use slate_common::constants::{EPHEMERAL_LABEL, MKE2FS_BIN, STATE_LABEL};

const MIB: u64 = 1024 * 1024;
/// Room before STATE for EFI (100 MiB), BIOS boot (1 MiB), BOOT (1000 MiB,
/// two kernel+initramfs slots) and META (1 MiB), after the 1 MiB GPT area.
const STATE_OFFSET: u64 = 1103 * MIB;
const STATE_SIZE: u64 = 100 * MIB;
/// Partition number of STATE (1–4 belong to the installer).
pub const STATE_NUMBER: u32 = 5;
/// EPHEMERAL follows STATE and takes the rest of the disk.
pub const EPHEMERAL_NUMBER: u32 = 6;
/// The partitions before STATE: number, name, offset and size in MiB,
/// type GUID (GPT's mixed-endian bytes).
const BOOT_PARTITIONS: [(u32, &str, u64, u64, [u8; 16]); 4] = [
    (1, "EFI", 1, 100, EFI_SYSTEM_GUID),
    (2, "BIOS", 101, 1, BIOS_BOOT_GUID),
    (3, "BOOT", 102, 1000, LINUX_FS_GUID),
    (4, "META", 1102, 1, LINUX_RESERVED_GUID),
];
/// C12A7328-F81F-11D2-BA4B-00A0C93EC93B.
const EFI_SYSTEM_GUID: [u8; 16] = [
    0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b,
];
/// 21686148-6449-6E6F-744E-656564454649 ("Hah!IdontNeedEFI").
const BIOS_BOOT_GUID: [u8; 16] = [
    0x48, 0x61, 0x68, 0x21, 0x49, 0x64, 0x6f, 0x6e, 0x74, 0x4e, 0x65, 0x65, 0x64, 0x45, 0x46, 0x49,
];
/// 8DA63339-0007-60C0-C436-083AC8230908: Linux reserved, so no tool
/// offers to mount META.
const LINUX_RESERVED_GUID: [u8; 16] = [
    0x39, 0x33, 0xa6, 0x8d, 0x07, 0x00, 0xc0, 0x60, 0xc4, 0x36, 0x08, 0x3a, 0xc8, 0x23, 0x09, 0x08,
];
/// The smallest EPHEMERAL worth making (a disk with less room gets STATE
/// only, and /var stays a tmpfs).
const EPHEMERAL_MIN: u64 = 256 * MIB;
/// "Linux filesystem data", 0FC63DAF-8483-4772-8E79-3D69D8477DE4, in GPT's
/// mixed-endian byte order.
const LINUX_FS_GUID: [u8; 16] = [
    0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4,
];

use crate::blockdev::{self, SYS_CLASS_BLOCK};

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("no disk for STATE: {0}")]
    NoDisk(String),
    /// Not an error of the node: it has no disk to keep a config on (an
    /// ISO boot without disks), so configs last until the next boot.
    #[error("no empty, writable, non-removable disk for STATE (set machine.install.disk)")]
    NoEmptyDisk,
    #[error(
        "{disk} holds data (a partition table or a filesystem): refusing to partition it; set machine.install.wipe: true to allow it"
    )]
    NotEmpty { disk: PathBuf },
    #[error("{disk} is {size} bytes, too small for the layout (needs {needed})")]
    TooSmall {
        disk: PathBuf,
        size: u64,
        needed: u64,
    },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the partition table to {disk}")]
    Gpt {
        disk: PathBuf,
        #[source]
        source: gptman::Error,
    },
    #[error("the kernel did not re-read the partition table of {disk}")]
    Reread {
        disk: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("{0} did not appear after partitioning")]
    NoPartition(PathBuf),
    #[error("mke2fs on {device} failed: {detail}")]
    Mkfs { device: PathBuf, detail: String },
    #[error("mounting {device} on {path}")]
    Mount {
        device: PathBuf,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DiskError {
    let path = path.to_owned();
    move |source| DiskError::Io { op, path, source }
}

/// The STATE partition, if the system disk has one: partition 5 of a
/// fixed, writable disk, labelled STATE. A STATE label anywhere else (a USB
/// stick, a partition number Slate never makes) is anybody's, and a node
/// that booted its config would be theirs.
pub fn find_state() -> Option<PathBuf> {
    blockdev::dev_paths(block_names().into_iter().filter(|name| is_partition(name)))
        .filter(|dev| is_system_state(dev, is_candidate_disk))
        .find(|dev| {
            blockdev::label_and_type(dev, &["ext4"]).is_some_and(|(label, _)| label == STATE_LABEL)
        })
}

/// Whether `partition` is where Slate puts STATE on a disk that
/// `fixed_disk` (by its name under /sys/class/block) accepts.
fn is_system_state(partition: &Path, fixed_disk: impl Fn(&str) -> bool) -> bool {
    let Some(disk) = disk_of(partition) else {
        return false;
    };
    partition_device(&disk, STATE_NUMBER) == partition
        && disk
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(fixed_disk)
}

/// EPHEMERAL on the disk that holds `state` (partition 6 beside it), if
/// it is there and labelled so: never one on another disk, which could be
/// anybody's.
pub fn find_ephemeral(state: &Path) -> Option<PathBuf> {
    let device = partition_device(&disk_of(state)?, EPHEMERAL_NUMBER);
    blockdev::label_and_type(&device, &["ext4"])
        .is_some_and(|(label, _)| label == EPHEMERAL_LABEL)
        .then_some(device)
}

/// `/dev/vda5` → `/dev/vda`; `/dev/nvme0n1p5` → `/dev/nvme0n1`.
pub fn disk_of(partition: &Path) -> Option<PathBuf> {
    let text = partition.to_str()?;
    let base = text.trim_end_matches(|c: char| c.is_ascii_digit());
    if base.len() == text.len() {
        return None;
    }
    let base = match base.strip_suffix('p') {
        Some(b) if b.ends_with(|c: char| c.is_ascii_digit()) => b,
        _ => base,
    };
    Some(PathBuf::from(base))
}

/// Mounts EPHEMERAL on `/var` (over the boot's tmpfs): programs run from
/// it (containerd's snapshots), so no `noexec`.
pub fn mount_ephemeral(device: &Path, mount_point: &Path) -> Result<(), DiskError> {
    std::fs::create_dir_all(mount_point).map_err(io("creating", mount_point))?;
    nix::mount::mount(
        Some(device),
        mount_point,
        Some("ext4"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|source| DiskError::Mount {
        device: device.to_owned(),
        path: mount_point.to_owned(),
        source,
    })
}

/// Makes a STATE partition on `wanted` (the config's `install.disk`) or on
/// the first empty, writable, fixed disk, formats it and returns it.
pub fn create_state(wanted: Option<&str>, wipe: bool) -> Result<PathBuf, DiskError> {
    let disk = match wanted {
        Some(disk) => PathBuf::from(disk),
        None => blockdev::dev_paths(block_names().into_iter().filter(|n| is_candidate_disk(n)))
            .find(|dev| blockdev::is_blank(dev) || unfinished(dev).is_some())
            .ok_or(DiskError::NoEmptyDisk)?,
    };
    let name = disk
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if is_partition(name) {
        return Err(DiskError::NoDisk(format!(
            "{} is a partition; machine.install.disk must name a whole disk",
            disk.display()
        )));
    }
    let device = partition_device(&disk, STATE_NUMBER);
    let with_ephemeral = if let Some(with_ephemeral) = unfinished(&disk) {
        // Power was lost between the partition table and mke2fs: finish
        // the job instead of refusing a disk that is not empty any more.
        tracing::info!(
            "{} has Slate's partitions but no STATE filesystem: formatting it",
            disk.display()
        );
        with_ephemeral
    } else {
        if !wipe && !blockdev::is_blank(&disk) {
            return Err(DiskError::NotEmpty { disk });
        }
        tracing::info!("creating the STATE partition on {}", disk.display());
        partition(&disk)?
    };
    format(&device, STATE_LABEL)?;
    let ephemeral = partition_device(&disk, EPHEMERAL_NUMBER);
    // After a reset that wiped STATE only, EPHEMERAL keeps its data.
    if with_ephemeral && blockdev::is_blank(&ephemeral) {
        tracing::info!("creating the EPHEMERAL partition on {}", disk.display());
        // STATE is what the node cannot do without; a failed EPHEMERAL
        // leaves /var on tmpfs, and says so at boot.
        if let Err(e) = format(&ephemeral, EPHEMERAL_LABEL) {
            tracing::error!("{:#}", anyhow::Error::from(e));
        }
    }
    Ok(device)
}

/// Whether `disk` holds the partition table Slate writes and nothing else,
/// with STATE still without a filesystem: what a power cut between
/// [`partition`] and [`format`] leaves. Says whether EPHEMERAL is in it.
fn unfinished(disk: &Path) -> Option<bool> {
    let mut file = std::fs::File::open(disk).ok()?;
    let gpt = gptman::GPT::find_from(&mut file).ok()?;
    let with_ephemeral = slate_layout(&gpt)?;
    let state = partition_device(disk, STATE_NUMBER);
    blockdev::is_blank(&state).then_some(with_ephemeral)
}

/// `Some(with EPHEMERAL)` when `gpt`'s used entries are exactly those
/// [`fill_layout`] makes: partitions 1–4, STATE as partition 5, EPHEMERAL
/// as 6 or absent (or, as disks were made before install existed, 5 and 6
/// alone).
fn slate_layout(gpt: &gptman::GPT) -> Option<bool> {
    let mut used: Vec<(u32, &gptman::GPTPartitionEntry)> =
        gpt.iter().filter(|(_, e)| e.is_used()).collect();
    let ours = |e: &gptman::GPTPartitionEntry, name: &str| {
        e.partition_type_guid == LINUX_FS_GUID && e.partition_name.as_str() == name
    };
    let boot_partitions = used
        .iter()
        .take(4)
        .zip(BOOT_PARTITIONS)
        .filter(|((n, e), (number, name, _, _, guid))| {
            n == number && e.partition_name.as_str() == *name && e.partition_type_guid == *guid
        })
        .count();
    if boot_partitions == 4 {
        used.drain(..4);
    }
    match used.as_slice() {
        [(STATE_NUMBER, s)] if ours(s, STATE_LABEL) => Some(false),
        [(STATE_NUMBER, s), (EPHEMERAL_NUMBER, e)]
            if ours(s, STATE_LABEL) && ours(e, EPHEMERAL_LABEL) =>
        {
            Some(true)
        }
        _ => None,
    }
}

fn wait_for_device(device: &Path) -> Result<(), DiskError> {
    let start = Instant::now();
    while !device.exists() {
        if start.elapsed() > Duration::from_secs(5) {
            return Err(DiskError::NoPartition(device.to_owned()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// ext4 labelled `label`; inode tables and the journal are initialised
/// lazily by the kernel, so a large EPHEMERAL formats in a moment.
fn format(device: &Path, label: &str) -> Result<(), DiskError> {
    format_with(device, label, &[])
}

/// mke2fs options for BOOT: GRUB 2.06 reads every feature Debian's
/// mke2fs enables by default, but not inline_data (files in the inode),
/// should a mke2fs.conf ever turn it on.
const BOOT_MKFS_OPTIONS: &[&str] = &["-O", "^inline_data"];

fn format_with(device: &Path, label: &str, options: &[&str]) -> Result<(), DiskError> {
    wait_for_device(device)?;
    let out = Command::new(MKE2FS_BIN)
        .args(["-q", "-F", "-t", "ext4", "-L", label])
        .args(["-E", "lazy_itable_init=1,lazy_journal_init=1"])
        .args(options)
        .arg(device)
        .output()
        .map_err(io("running mke2fs for", device))?;
    if !out.status.success() {
        return Err(DiskError::Mkfs {
            device: device.to_owned(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// Mounts STATE on `mount_point` (created mode 0700).
pub fn mount_state(device: &Path, mount_point: &Path) -> Result<(), DiskError> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(mount_point).map_err(io("creating", mount_point))?;
    std::fs::set_permissions(mount_point, std::fs::Permissions::from_mode(0o700))
        .map_err(io("restricting", mount_point))?;
    nix::mount::mount(
        Some(device),
        mount_point,
        Some("ext4"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|source| DiskError::Mount {
        device: device.to_owned(),
        path: mount_point.to_owned(),
        source,
    })?;
    // The volume's own root directory: keys live here.
    std::fs::set_permissions(mount_point, std::fs::Permissions::from_mode(0o700))
        .map_err(io("restricting", mount_point))
}

/// Whether something is mounted on `path` (it lies on another device than
/// its parent directory).
pub fn is_mounted(path: &Path) -> bool {
    let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
    match (dev(path), path.parent().and_then(dev)) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    }
}

nix::ioctl_none!(blkrrpart, 0x12, 95);

/// Writes a fresh GPT with the STATE entry (and EPHEMERAL's when the disk
/// has room), then has the kernel re-read it; says whether EPHEMERAL is in.
fn partition(disk: &Path) -> Result<bool, DiskError> {
    let name = disk
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let sector = read_sys_u64(name, "queue/logical_block_size").unwrap_or(512);
    // O_EXCL on a block device: refused while anything has it mounted or
    // otherwise claimed.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_EXCL)
        .open(disk)
        .map_err(io("opening (exclusively)", disk))?;
    let size = read_sys_u64(name, "size").map(|s| s * 512).unwrap_or(0);
    let needed = STATE_OFFSET + STATE_SIZE + MIB;
    if size < needed {
        return Err(DiskError::TooSmall {
            disk: disk.to_owned(),
            size,
            needed,
        });
    }
    let gpt_err = |source| DiskError::Gpt {
        disk: disk.to_owned(),
        source,
    };
    let mut gpt = gptman::GPT::new_from(&mut file, sector, random_guid()).map_err(gpt_err)?;
    let with_ephemeral = fill_layout(&mut gpt, size, sector);
    gptman::GPT::write_protective_mbr_into(&mut file, sector).map_err(gpt_err)?;
    gpt.write_into(&mut file).map_err(gpt_err)?;
    file.flush().map_err(io("flushing", disk))?;
    file.sync_all().map_err(io("syncing", disk))?;
    // SAFETY: BLKRRPART takes no argument; the descriptor is an open block
    // device that lives until the end of this function.
    unsafe { blkrrpart(file.as_raw_fd()) }.map_err(|source| DiskError::Reread {
        disk: disk.to_owned(),
        source,
    })?;
    Ok(with_ephemeral)
}

/// The boot partitions, STATE, and EPHEMERAL in the rest of a disk of
/// `size` bytes when that is at least [`EPHEMERAL_MIN`] (returned: whether
/// it is).
fn fill_layout(gpt: &mut gptman::GPT, size: u64, sector: u64) -> bool {
    for (number, name, offset, length, guid) in BOOT_PARTITIONS {
        gpt[number] = gptman::GPTPartitionEntry {
            partition_type_guid: guid,
            unique_partition_guid: random_guid(),
            starting_lba: offset * MIB / sector,
            ending_lba: (offset + length) * MIB / sector - 1,
            attribute_bits: 0,
            partition_name: name.into(),
        };
    }
    gpt[STATE_NUMBER] = gptman::GPTPartitionEntry {
        partition_type_guid: LINUX_FS_GUID,
        unique_partition_guid: random_guid(),
        starting_lba: STATE_OFFSET / sector,
        ending_lba: (STATE_OFFSET + STATE_SIZE) / sector - 1,
        attribute_bits: 0,
        partition_name: STATE_LABEL.into(),
    };
    // The rest, up to the backup GPT (the last 33 sectors; 1 MiB spared).
    let ephemeral_start = STATE_OFFSET + STATE_SIZE;
    let ephemeral_end = size.saturating_sub(MIB);
    if ephemeral_end.saturating_sub(ephemeral_start) >= EPHEMERAL_MIN {
        gpt[EPHEMERAL_NUMBER] = gptman::GPTPartitionEntry {
            partition_type_guid: LINUX_FS_GUID,
            unique_partition_guid: random_guid(),
            starting_lba: ephemeral_start / sector,
            ending_lba: ephemeral_end / sector - 1,
            attribute_bits: 0,
            partition_name: EPHEMERAL_LABEL.into(),
        };
        return true;
    }
    false
}

/// A random (version 4) GUID from the kernel's CSPRNG.
fn random_guid() -> [u8; 16] {
    let mut g = [0u8; 16];
    if let Ok(bytes) = std::fs::read("/proc/sys/kernel/random/uuid") {
        // "xxxxxxxx-xxxx-…": the kernel's own UUIDv4, as text.
        let hex: Vec<u8> = bytes
            .iter()
            .copied()
            .filter(u8::is_ascii_hexdigit)
            .collect();
        for (i, pair) in hex.chunks(2).take(16).enumerate() {
            g[i] = u8::from_str_radix(std::str::from_utf8(pair).unwrap_or("0"), 16).unwrap_or(0);
        }
    }
    g
}

/// `/dev/vda` + 5 → `/dev/vda5`; `/dev/nvme0n1` + 5 → `/dev/nvme0n1p5`.
pub fn partition_device(disk: &Path, number: u32) -> PathBuf {
    let text = disk.display().to_string();
    if text.ends_with(|c: char| c.is_ascii_digit()) {
        PathBuf::from(format!("{text}p{number}"))
    } else {
        PathBuf::from(format!("{text}{number}"))
    }
}

fn block_names() -> Vec<String> {
    blockdev::names(Path::new(SYS_CLASS_BLOCK))
}

fn is_partition(name: &str) -> bool {
    Path::new(SYS_CLASS_BLOCK)
        .join(name)
        .join("partition")
        .exists()
}

/// A whole, fixed, writable disk: not a partition, not removable or
/// read-only (CD-ROMs, config drives), not a loop, RAM or mapper device.
fn is_candidate_disk(name: &str) -> bool {
    !["loop", "ram", "zram", "sr", "dm-", "md"]
        .iter()
        .any(|p| name.starts_with(p))
        && !is_partition(name)
        && read_sys_u64(name, "removable") == Some(0)
        && read_sys_u64(name, "ro") == Some(0)
}

fn read_sys_u64(name: &str, attr: &str) -> Option<u64> {
    std::fs::read_to_string(Path::new(SYS_CLASS_BLOCK).join(name).join(attr))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// First sector and length in sectors (512 bytes) of partition `number`
/// of `disk`, from its partition table.
pub fn partition_extent(disk: &Path, number: u32) -> Result<(u64, u64), DiskError> {
    let mut file = std::fs::File::open(disk).map_err(io("opening", disk))?;
    let gpt = gptman::GPT::find_from(&mut file).map_err(|source| DiskError::Gpt {
        disk: disk.to_owned(),
        source,
    })?;
    let entry = &gpt[number];
    if !entry.is_used() {
        return Err(DiskError::NoPartition(partition_device(disk, number)));
    }
    let per = gpt.sector_size / 512;
    let sectors = (entry.ending_lba + 1)
        .checked_sub(entry.starting_lba)
        .ok_or_else(|| DiskError::NoPartition(partition_device(disk, number)))?;
    Ok((entry.starting_lba * per, sectors * per))
}

/// Mounts an `fstype` filesystem: never suid, devices or programs.
pub fn mount(device: &Path, mount_point: &Path, fstype: &str, rw: bool) -> Result<(), DiskError> {
    std::fs::create_dir_all(mount_point).map_err(io("creating", mount_point))?;
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if !rw {
        flags |= MsFlags::MS_RDONLY;
    }
    nix::mount::mount(Some(device), mount_point, Some(fstype), flags, None::<&str>).map_err(
        |source| DiskError::Mount {
            device: device.to_owned(),
            path: mount_point.to_owned(),
            source,
        },
    )
}

/// BOOT's ext4, with only the features GRUB 2.06 reads.
pub fn format_boot(device: &Path, label: &str) -> Result<(), DiskError> {
    format_with(device, label, BOOT_MKFS_OPTIONS)
}

nix::ioctl_write_ptr_bad!(blkdiscard, 0x1277, [u64; 2]);

/// Destroys the filesystem on `device`: zeroes all of it (`whole`), or
/// discards all of it and zeroes its first 16 MiB, where every signature
/// libblkid probes for lives.
pub fn wipe(device: &Path, whole: bool) -> Result<(), DiskError> {
    let mut file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_EXCL)
        .open(device)
        .map_err(io("opening (exclusively)", device))?;
    let size = file
        .metadata()
        .map(|m| m.len())
        .ok()
        .filter(|&s| s > 0)
        .unwrap_or_else(|| {
            use std::io::Seek as _;
            file.seek(std::io::SeekFrom::End(0)).unwrap_or(0)
        });
    use std::io::Seek as _;
    if size == 0 {
        return Err(DiskError::Io {
            op: "reading the size of",
            path: device.to_owned(),
            source: std::io::Error::other("it reports 0 bytes"),
        });
    }
    file.seek(std::io::SeekFrom::Start(0))
        .map_err(io("seeking in", device))?;
    let zero_len = if whole { size } else { size.min(16 * MIB) };
    if !whole {
        // A device without discard answers EOPNOTSUPP: the zeroing below
        // still wipes the signature.
        let range = [0u64, size];
        // SAFETY: BLKDISCARD reads a [start, length] pair of u64 from the
        // pointer, which outlives the call.
        let _ = unsafe { blkdiscard(file.as_raw_fd(), &range) };
    }
    let zeros = vec![0u8; MIB as usize];
    let mut left = zero_len;
    while left > 0 {
        let n = left.min(MIB) as usize;
        file.write_all(&zeros[..n]).map_err(io("wiping", device))?;
        left -= n as u64;
    }
    file.sync_all().map_err(io("syncing", device))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_of_a_partition() {
        assert_eq!(
            disk_of(Path::new("/dev/vda5")),
            Some(PathBuf::from("/dev/vda"))
        );
        assert_eq!(
            disk_of(Path::new("/dev/nvme0n1p5")),
            Some(PathBuf::from("/dev/nvme0n1"))
        );
        assert_eq!(
            disk_of(Path::new("/dev/mmcblk0p5")),
            Some(PathBuf::from("/dev/mmcblk0"))
        );
        assert_eq!(disk_of(Path::new("/dev/vda")), None);
    }

    #[test]
    fn state_is_taken_only_from_partition_5_of_a_fixed_disk() {
        let fixed = |name: &str| name != "sdb";
        assert!(is_system_state(Path::new("/dev/vda5"), fixed));
        assert!(is_system_state(Path::new("/dev/nvme0n1p5"), fixed));
        // A USB stick labelled STATE.
        assert!(!is_system_state(Path::new("/dev/sdb5"), fixed));
        // A STATE label on a partition Slate never makes.
        assert!(!is_system_state(Path::new("/dev/vda1"), fixed));
        assert!(!is_system_state(Path::new("/dev/vda"), fixed));
    }

    #[test]
    fn partition_device_names() {
        assert_eq!(
            partition_device(Path::new("/dev/vda"), 5),
            Path::new("/dev/vda5")
        );
        assert_eq!(
            partition_device(Path::new("/dev/nvme0n1"), 5),
            Path::new("/dev/nvme0n1p5")
        );
    }

    #[test]
    fn a_fresh_table_places_state_and_ephemeral_where_the_layout_says() {
        // What partition() writes, on an in-memory "disk" of 2 GiB.
        let size = 2048 * MIB;
        let mut disk = std::io::Cursor::new(vec![0u8; size as usize]);
        let mut gpt = gptman::GPT::new_from(&mut disk, 512, [1; 16]).unwrap();
        assert!(fill_layout(&mut gpt, size, 512));
        gpt.write_into(&mut disk).unwrap();
        let read = gptman::GPT::read_from(&mut disk, 512).unwrap();
        let used: Vec<_> = read.iter().filter(|(_, e)| e.is_used()).collect();
        assert_eq!(used.len(), 6);
        // EFI, BIOS boot, BOOT, META back to back from 1 MiB, up to STATE.
        let names: Vec<_> = used[..4]
            .iter()
            .map(|(n, e)| (*n, e.partition_name.as_str()))
            .collect();
        assert_eq!(names, [(1, "EFI"), (2, "BIOS"), (3, "BOOT"), (4, "META")]);
        assert_eq!(used[0].1.starting_lba * 512, MIB);
        assert_eq!(used[0].1.partition_type_guid, EFI_SYSTEM_GUID);
        assert_eq!(used[1].1.size().unwrap() * 512, MIB);
        for pair in used[..5].windows(2) {
            assert_eq!(pair[1].1.starting_lba, pair[0].1.ending_lba + 1);
        }
        let (n, state) = used[4];
        assert_eq!((n, state.partition_name.as_str()), (STATE_NUMBER, "STATE"));
        assert_eq!(state.starting_lba * 512, STATE_OFFSET);
        assert_eq!(state.size().unwrap() * 512, STATE_SIZE);
        let (n, eph) = used[5];
        assert_eq!(
            (n, eph.partition_name.as_str()),
            (EPHEMERAL_NUMBER, "EPHEMERAL")
        );
        assert_eq!(eph.starting_lba, state.ending_lba + 1);
        assert_eq!((eph.ending_lba + 1) * 512, size - MIB);

        assert_eq!(slate_layout(&read), Some(true), "Slate's own table");

        // Too little room left: STATE only, /var stays a tmpfs.
        let small = STATE_OFFSET + STATE_SIZE + 100 * MIB;
        let mut disk = std::io::Cursor::new(vec![0u8; small as usize]);
        let mut gpt = gptman::GPT::new_from(&mut disk, 512, [1; 16]).unwrap();
        assert!(!fill_layout(&mut gpt, small, 512));
        assert_eq!(gpt.iter().filter(|(_, e)| e.is_used()).count(), 5);
        assert_eq!(slate_layout(&gpt), Some(false));
    }

    #[test]
    fn only_slate_s_own_table_counts_as_unfinished() {
        let size = 2048 * MIB;
        let mut disk = std::io::Cursor::new(vec![0u8; size as usize]);
        let mut gpt = gptman::GPT::new_from(&mut disk, 512, [1; 16]).unwrap();
        assert_eq!(slate_layout(&gpt), None, "an empty table is not Slate's");
        fill_layout(&mut gpt, size, 512);
        // Someone's data partition beside them: never formatted over.
        let mut theirs = gpt.clone();
        theirs[1] = gptman::GPTPartitionEntry {
            partition_type_guid: LINUX_FS_GUID,
            unique_partition_guid: [7; 16],
            starting_lba: 2048,
            ending_lba: 4095,
            attribute_bits: 0,
            partition_name: "data".into(),
        };
        assert_eq!(slate_layout(&theirs), None);
        // A disk made before install existed: STATE and EPHEMERAL alone.
        let mut legacy = gpt.clone();
        for n in 1..=4 {
            legacy.remove(n).unwrap();
        }
        assert_eq!(slate_layout(&legacy), Some(true));
        // A partition 5 named STATE of another type is not Slate's either.
        let mut renamed = gpt.clone();
        renamed[STATE_NUMBER].partition_type_guid = [9; 16];
        assert_eq!(slate_layout(&renamed), None);
    }
}
