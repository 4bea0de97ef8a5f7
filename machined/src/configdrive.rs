//! The nocloud config drive: a volume labelled `cidata` whose `user-data`
//! file is the machine config.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libblkid_rs::BlkidCache;
use nix::mount::{MntFlags, MsFlags};
use slate_machinery::constants::{CONFIG_DRIVE_LABEL, CONFIG_DRIVE_USER_DATA};

/// Block devices are probed by the kernel while machined starts; a drive
/// that is there at all shows up well within this.
const DEVICE_WAIT: Duration = Duration::from_secs(3);
/// A machine config is a few KiB; anything this large is not one.
const MAX_USER_DATA: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ConfigDriveError {
    #[error("probing block devices with libblkid")]
    Probe(#[source] libblkid_rs::BlkidErr),
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
    let Some((device, fstype)) = find_drive()? else {
        return Ok(None);
    };
    if !matches!(fstype.as_str(), "iso9660" | "vfat") {
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
fn find_drive() -> Result<Option<(PathBuf, String)>, ConfigDriveError> {
    let start = Instant::now();
    loop {
        // A fresh cache each round, backed by /dev/null: nothing is written
        // to the read-only root and every probe sees current devices.
        let mut cache =
            BlkidCache::get_cache(Some(Path::new("/dev/null"))).map_err(ConfigDriveError::Probe)?;
        cache.probe_all().map_err(ConfigDriveError::Probe)?;
        if let Ok(dev) = cache.find_dev_with_tag("LABEL", CONFIG_DRIVE_LABEL) {
            let device = dev.devname().map_err(ConfigDriveError::Probe)?;
            let fstype = cache.get_tag_value("TYPE", &device).unwrap_or_default();
            return Ok(Some((device, fstype)));
        }
        if start.elapsed() >= DEVICE_WAIT {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
