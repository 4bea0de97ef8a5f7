//! The nocloud config drive: a volume labelled `cidata` whose `user-data`
//! file is the machine config.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags};
use slate_common::constants::{CONFIG_DRIVE_LABEL, CONFIG_DRIVE_USER_DATA};

/// Block devices are probed by the kernel while machined starts; a drive
/// that is there at all shows up well within this.
const DEVICE_WAIT: Duration = Duration::from_secs(3);
/// A machine config is a few KiB; anything this large is not one.
const MAX_USER_DATA: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ConfigDriveError {
    #[error("{device} has no usable filesystem type ({fstype:?})")]
    FsType { device: PathBuf, fstype: String },
    #[error("creating mount point {path}")]
    MountPoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mounting {device} ({fstype}) on {path}")]
    Mount {
        device: PathBuf,
        fstype: String,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("reading {path} from {device}")]
    Read {
        device: PathBuf,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} on {device} is {size} bytes, more than a machine config can be ({MAX_USER_DATA})"
    )]
    TooLarge {
        device: PathBuf,
        path: PathBuf,
        size: u64,
    },
}

/// What was read from the drive, and from where, for error messages.
#[derive(Debug)]
pub struct UserData {
    pub device: PathBuf,
    pub text: String,
}

impl UserData {
    /// How the user should find the file: `/dev/vdb:/user-data`.
    pub fn source_name(&self) -> String {
        format!("{}:/{CONFIG_DRIVE_USER_DATA}", self.device.display())
    }
}

/// Finds the `cidata` volume, mounts it read-only on `mount_point`, reads
/// `user-data` and unmounts it. `Ok(None)` when there is no such volume, or
/// when it has no `user-data` file.
pub fn read_user_data(mount_point: &Path) -> Result<Option<UserData>, ConfigDriveError> {
    let Some((device, fstype)) = find_drive() else {
        return Ok(None);
    };
    if !CONFIG_DRIVE_FILESYSTEMS.contains(&fstype.as_str()) {
        return Err(ConfigDriveError::FsType { device, fstype });
    }
    std::fs::create_dir_all(mount_point).map_err(|source| ConfigDriveError::MountPoint {
        path: mount_point.to_owned(),
        source,
    })?;
    nix::mount::mount(
        Some(&device),
        mount_point,
        Some(fstype.as_str()),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|source| ConfigDriveError::Mount {
        device: device.clone(),
        fstype: fstype.clone(),
        path: mount_point.to_owned(),
        source,
    })?;
    tracing::debug!("config drive mounted");
    let result = read_limited(&device, &mount_point.join(CONFIG_DRIVE_USER_DATA));
    if let Err(e) = nix::mount::umount2(mount_point, MntFlags::MNT_DETACH) {
        tracing::warn!("unmounting {}: {e}", mount_point.display());
    }
    Ok(result?.map(|text| UserData { device, text }))
}

fn read_limited(device: &Path, path: &Path) -> Result<Option<String>, ConfigDriveError> {
    let err = |source| ConfigDriveError::Read {
        device: device.to_owned(),
        path: path.to_owned(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e)),
    };
    if meta.len() > MAX_USER_DATA {
        return Err(ConfigDriveError::TooLarge {
            device: device.to_owned(),
            path: path.to_owned(),
            size: meta.len(),
        });
    }
    let bytes = std::fs::read(path).map_err(err)?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// The device labelled `cidata` and its filesystem type, waiting briefly
/// for block devices that are still being probed.
fn find_drive() -> Option<(PathBuf, String)> {
    let start = Instant::now();
    loop {
        for device in block_devices(Path::new(crate::blockdev::SYS_CLASS_BLOCK)) {
            if let Some(fstype) = probe_label(&device) {
                return Some((device, fstype));
            }
        }
        if start.elapsed() >= DEVICE_WAIT {
            return None;
        }
        // Short: the drive is usually there already and this only bridges
        // the moment its driver is still probing.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Block devices that may hold a config drive, as `/dev/NAME`, sorted.
/// Loop and RAM devices are skipped: the root image is a loop device, and
/// a config drive is always a real (or virtual) disk.
fn block_devices(sys_class_block: &Path) -> Vec<PathBuf> {
    let names = crate::blockdev::names(sys_class_block)
        .into_iter()
        .filter(|name| !["loop", "ram", "zram"].iter().any(|p| name.starts_with(p)));
    crate::blockdev::dev_paths(names).collect()
}

/// The filesystem type of `device` if it carries the config drive label.
fn probe_label(device: &Path) -> Option<String> {
    let (label, fstype) = crate::blockdev::label_and_type(device, &CONFIG_DRIVE_FILESYSTEMS)?;
    (label == CONFIG_DRIVE_LABEL).then_some(fstype)
}

/// Filesystems a nocloud config drive may use.
const CONFIG_DRIVE_FILESYSTEMS: [&str; 2] = ["iso9660", "vfat"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_disks_but_not_loop_or_ram_devices() {
        let sys = tempfile::tempdir().unwrap();
        for name in ["vdb", "loop0", "ram1", "sr0", "vda1", "zram0", "nvme0n1"] {
            std::fs::create_dir(sys.path().join(name)).unwrap();
        }
        let names: Vec<String> = block_devices(sys.path())
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(names, ["/dev/nvme0n1", "/dev/sr0", "/dev/vda1", "/dev/vdb"]);
    }
}
