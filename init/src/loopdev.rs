//! Attaching the root image to a loop device, read-only.
//!
//! The few loop ioctls are declared here with nix's ioctl macros rather than
//! taken from the `loopdev` crate: that crate generates its bindings with
//! bindgen at build time, which needs libclang on every build machine, for
//! five constants and two plain structs that have been stable kernel ABI
//! since Linux 2.6 (LOOP_CONFIGURE since 5.8).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use thiserror::Error;

// <linux/loop.h>: these are "bad" ioctls (plain numbers, not _IOW-encoded).
const LOOP_SET_FD: u32 = 0x4C00;
const LOOP_SET_STATUS64: u32 = 0x4C04;
const LOOP_CONFIGURE: u32 = 0x4C0A;
const LOOP_CTL_GET_FREE: u32 = 0x4C82;

/// The kernel forces read-only when the backing file or the loop device is
/// opened without write access; the flag says it explicitly as well.
pub const LO_FLAGS_READ_ONLY: u32 = 1;
/// Detach automatically when the last user (our mount) goes away, so a
/// failed mount attempt does not leak a bound loop device.
pub const LO_FLAGS_AUTOCLEAR: u32 = 4;

const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;

/// `struct loop_info64`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LoopInfo64 {
    pub lo_device: u64,
    pub lo_inode: u64,
    pub lo_rdevice: u64,
    pub lo_offset: u64,
    pub lo_sizelimit: u64,
    pub lo_number: u32,
    pub lo_encrypt_type: u32,
    pub lo_encrypt_key_size: u32,
    pub lo_flags: u32,
    pub lo_file_name: [u8; LO_NAME_SIZE],
    pub lo_crypt_name: [u8; LO_NAME_SIZE],
    pub lo_encrypt_key: [u8; LO_KEY_SIZE],
    pub lo_init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LoopConfig {
    pub fd: u32,
    pub block_size: u32,
    pub info: LoopInfo64,
    pub reserved: [u64; 8],
}

nix::ioctl_none_bad!(loop_ctl_get_free, LOOP_CTL_GET_FREE);
nix::ioctl_write_int_bad!(loop_set_fd, LOOP_SET_FD);
nix::ioctl_write_ptr_bad!(loop_set_status64, LOOP_SET_STATUS64, LoopInfo64);
nix::ioctl_write_ptr_bad!(loop_configure, LOOP_CONFIGURE, LoopConfig);

#[derive(Debug, Error)]
pub enum LoopError {
    #[error("waiting {waited:?} for {path}")]
    Timeout { path: PathBuf, waited: Duration },
    #[error("opening {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("asking {control} for a free loop device")]
    GetFree {
        control: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("attaching {image} to {device}")]
    Attach {
        image: PathBuf,
        device: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("setting status (read-only, autoclear) of {device}")]
    SetStatus {
        device: PathBuf,
        #[source]
        source: Errno,
    },
}

/// A bound loop device. Keep it open until the filesystem on it is mounted:
/// with autoclear, closing the last reference detaches it.
#[derive(Debug)]
pub struct LoopDevice {
    pub path: PathBuf,
    pub file: File,
}

fn info_for(image: &Path) -> LoopInfo64 {
    let mut info = LoopInfo64 {
        lo_device: 0,
        lo_inode: 0,
        lo_rdevice: 0,
        lo_offset: 0,
        lo_sizelimit: 0,
        lo_number: 0,
        lo_encrypt_type: 0,
        lo_encrypt_key_size: 0,
        lo_flags: LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
        lo_file_name: [0; LO_NAME_SIZE],
        lo_crypt_name: [0; LO_NAME_SIZE],
        lo_encrypt_key: [0; LO_KEY_SIZE],
        lo_init: [0; 2],
    };
    // Shown in /sys/block/loopN/loop/backing_file; truncated, NUL-terminated.
    let name = image.as_os_str().as_encoded_bytes();
    let n = name.len().min(LO_NAME_SIZE - 1);
    info.lo_file_name[..n].copy_from_slice(&name[..n]);
    info
}

fn open_read_only(path: &Path) -> Result<File, LoopError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| LoopError::Open {
            path: path.to_path_buf(),
            source,
        })
}

/// Poll for a device node (devtmpfs creates it when the driver registers).
pub fn wait_for(path: &Path, timeout: Duration) -> Result<(), LoopError> {
    let start = Instant::now();
    loop {
        if path.exists() {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(LoopError::Timeout {
                path: path.to_path_buf(),
                waited: start.elapsed(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Get a free loop device from `control` (`/dev/loop-control`) and bind
/// `image` to it read-only.
pub fn attach_read_only(control: &Path, image: &Path) -> Result<LoopDevice, LoopError> {
    let ctl = open_read_only(control)?;
    // SAFETY: LOOP_CTL_GET_FREE takes no argument; the fd is open.
    let n = unsafe { loop_ctl_get_free(ctl.as_raw_fd()) }.map_err(|source| LoopError::GetFree {
        control: control.to_path_buf(),
        source,
    })?;
    let device = PathBuf::from(format!("/dev/loop{n}"));
    wait_for(&device, Duration::from_secs(1))?;
    let dev = open_read_only(&device)?;
    let backing = open_read_only(image)?;
    let info = info_for(image);

    let config = LoopConfig {
        fd: backing.as_raw_fd() as u32,
        block_size: 0,
        info,
        reserved: [0; 8],
    };
    // SAFETY: `config` is a valid, fully initialised loop_config that lives
    // across the call; the kernel only reads it.
    match unsafe { loop_configure(dev.as_raw_fd(), &config) } {
        Ok(_) => {}
        // Kernels before 5.8 do not know LOOP_CONFIGURE: the two-step way.
        Err(Errno::EINVAL | Errno::ENOTTY) => {
            // SAFETY: LOOP_SET_FD takes the backing fd by value.
            unsafe { loop_set_fd(dev.as_raw_fd(), backing.as_raw_fd()) }.map_err(|source| {
                LoopError::Attach {
                    image: image.to_path_buf(),
                    device: device.clone(),
                    source,
                }
            })?;
            // SAFETY: `info` is a valid loop_info64 the kernel only reads.
            unsafe { loop_set_status64(dev.as_raw_fd(), &info) }.map_err(|source| {
                LoopError::SetStatus {
                    device: device.clone(),
                    source,
                }
            })?;
        }
        Err(source) => {
            return Err(LoopError::Attach {
                image: image.to_path_buf(),
                device,
                source,
            });
        }
    }
    // The loop device holds its own reference to the backing file.
    drop(backing);
    Ok(LoopDevice {
        path: device,
        file: dev,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structs_match_the_kernel_abi() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }

    #[test]
    fn info_is_read_only_with_a_terminated_name() {
        let info = info_for(Path::new("/rootfs.sqsh"));
        assert_eq!(info.lo_flags & LO_FLAGS_READ_ONLY, LO_FLAGS_READ_ONLY);
        assert_eq!(&info.lo_file_name[..13], b"/rootfs.sqsh\0");
        let long = "/x".repeat(100);
        let info = info_for(Path::new(&long));
        assert_eq!(info.lo_file_name[LO_NAME_SIZE - 1], 0);
    }

    #[test]
    fn waiting_is_bounded() {
        let err = wait_for(Path::new("/nonexistent/loop-control"), Duration::ZERO).unwrap_err();
        assert!(matches!(err, LoopError::Timeout { .. }));
    }
}
