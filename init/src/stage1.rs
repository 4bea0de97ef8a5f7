//! Stage 1: from the initramfs to the squashfs root.
//!
//! mount the API filesystems → load modules → attach `/rootfs.sqsh` to a
//! loop device and mount it on `/newroot` → move the API filesystems into it
//! → switch root → exec `/sbin/init` (stage 2). [`run`] returns only on
//! failure; the caller then powers off.

use std::convert::Infallible;
use std::path::PathBuf;
use std::time::Duration;

use slate_common::constants::PROC_CMDLINE;
use thiserror::Error;

use crate::cmdline::Cmdline;
use crate::loopdev::{self, LoopError};
use crate::modules;
use crate::mounts::{self, MountError, STAGE1_MOUNTS};
use crate::switch_root::{self, MOVED_MOUNTS, SwitchRootError};
use crate::{console, debug, log};

/// How long the loop driver gets to show up after its module is loaded.
pub const LOOP_CONTROL_WAIT: Duration = Duration::from_secs(5);
/// Attempts for the steps that can lose a race (loop device, mount).
pub const ATTEMPTS: u32 = 3;
pub const RETRY_DELAY: Duration = Duration::from_millis(250);

#[derive(Clone, Debug)]
pub struct Config {
    pub image: PathBuf,
    /// The extension layer, mounted on `new_root/usr/local` if present.
    pub extensions: PathBuf,
    pub new_root: PathBuf,
    pub module_list: PathBuf,
    pub cmdline: PathBuf,
    pub console: PathBuf,
    pub loop_control: PathBuf,
    pub next_init: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            image: crate::ROOTFS_IMAGE.into(),
            extensions: crate::EXTENSIONS_IMAGE.into(),
            new_root: crate::NEW_ROOT.into(),
            module_list: crate::MODULE_LIST.into(),
            cmdline: PROC_CMDLINE.into(),
            console: "/dev/console".into(),
            loop_control: "/dev/loop-control".into(),
            next_init: crate::NEXT_INIT.into(),
        }
    }
}

#[derive(Debug, Error)]
pub enum Stage1Error {
    #[error("stage 1: mounting API filesystems")]
    Mount(#[source] MountError),
    #[error("stage 1: attaching the root image")]
    Loop(#[source] LoopError),
    #[error("stage 1: mounting the root image")]
    MountRoot(#[source] MountError),
    #[error("stage 1: switching root")]
    SwitchRoot(#[source] SwitchRootError),
}

/// Run stage 1. Returns only if something failed (on success this process
/// has become stage 2).
pub fn run(cfg: &Config) -> Stage1Error {
    match run_inner(cfg) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn run_inner(cfg: &Config) -> Result<Infallible, Stage1Error> {
    for spec in STAGE1_MOUNTS {
        mounts::mount_spec(spec).map_err(Stage1Error::Mount)?;
        if spec.target == "/dev" {
            // The kernel opened fds 0-2 on the initramfs node, now hidden
            // under devtmpfs; keep writing to the live device.
            if let Err(e) = console::reopen(&cfg.console) {
                log!("reopening {}: {e}", cfg.console.display());
            }
        }
    }
    let cmdline = Cmdline::read(&cfg.cmdline);
    console::set_verbose(cmdline.debug);
    log!("stage 1: starting");

    match modules::load_list(&cfg.module_list) {
        Ok(s) => log!("modules: {s}"),
        // Not fatal: a kernel with the drivers built in needs no list.
        Err(e) => log!("{}", console::chain(&e)),
    }

    loopdev::wait_for(&cfg.loop_control, LOOP_CONTROL_WAIT).map_err(Stage1Error::Loop)?;
    let device = retry("attaching the root image", || {
        loopdev::attach_read_only(&cfg.loop_control, &cfg.image)
    })
    .map_err(Stage1Error::Loop)?;
    debug!("{} on {}", cfg.image.display(), device.path.display());
    retry("mounting the root image", || {
        mounts::mount_read_only(&device.path, &cfg.new_root, "squashfs")
    })
    .map_err(Stage1Error::MountRoot)?;
    // The mount holds the loop device now; with autoclear it detaches when
    // the mount goes.
    drop(device);
    log!("stage 1: root mounted");
    if cfg.extensions.exists() {
        // Not fatal: the node boots without the layer and says so; its
        // services then report their programs missing.
        match mount_extensions(cfg) {
            Ok(()) => log!(
                "stage 1: extensions mounted on /{}",
                crate::EXTENSIONS_MOUNT
            ),
            Err(e) => log!("stage 1: no extensions: {}", console::chain(&*e)),
        }
    }

    switch_root::switch_root(&cfg.new_root, MOVED_MOUNTS, &cfg.next_init)
        .map_err(Stage1Error::SwitchRoot)?;
    debug!("switched root; exec {}", cfg.next_init);
    Err(Stage1Error::SwitchRoot(switch_root::exec(&cfg.next_init)))
}

/// Attaches the extension layer and mounts it read-only inside the new
/// root, where it stays after switch_root.
fn mount_extensions(cfg: &Config) -> Result<(), Box<dyn std::error::Error>> {
    let device = retry("attaching the extension layer", || {
        loopdev::attach_read_only(&cfg.loop_control, &cfg.extensions)
    })?;
    let target = cfg.new_root.join(crate::EXTENSIONS_MOUNT);
    retry("mounting the extension layer", || {
        mounts::mount_read_only(&device.path, &target, "squashfs")
    })?;
    Ok(())
}

/// Run `step` up to [`ATTEMPTS`] times, logging each failure. For steps that
/// can lose a race with the kernel (device nodes appearing, another opener
/// taking the free loop device).
pub fn retry<T, E: std::error::Error>(
    what: &str,
    step: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    retry_with(what, ATTEMPTS, || std::thread::sleep(RETRY_DELAY), step)
}

fn retry_with<T, E: std::error::Error>(
    what: &str,
    attempts: u32,
    mut pause: impl FnMut(),
    mut step: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let mut n = 1;
    loop {
        match step() {
            Ok(v) => return Ok(v),
            Err(e) if n >= attempts => return Err(e),
            Err(e) => {
                log!(
                    "{what} (attempt {n}/{attempts}): {}; retrying",
                    console::chain(&e)
                );
                n += 1;
                pause();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn retry_stops_at_the_first_success() {
        let mut calls = 0;
        let mut pauses = 0;
        let r: Result<u32, io::Error> = retry_with(
            "x",
            3,
            || pauses += 1,
            || {
                calls += 1;
                if calls < 2 {
                    Err(io::ErrorKind::NotFound.into())
                } else {
                    Ok(7)
                }
            },
        );
        assert_eq!(r.unwrap(), 7);
        assert_eq!((calls, pauses), (2, 1));
    }

    #[test]
    fn retry_gives_up_after_the_last_attempt() {
        let mut calls = 0;
        let r: Result<(), io::Error> = retry_with(
            "x",
            3,
            || {},
            || {
                calls += 1;
                Err(io::ErrorKind::NotFound.into())
            },
        );
        assert!(r.is_err());
        assert_eq!(calls, 3);
    }

    #[test]
    fn default_paths() {
        let cfg = Config::default();
        assert!(
            cfg.image.is_absolute() && cfg.new_root.is_absolute() && cfg.module_list.is_absolute()
        );
        assert_eq!(cfg.image, PathBuf::from("/rootfs.sqsh"));
        assert_eq!(cfg.cmdline, PathBuf::from("/proc/cmdline"));
    }
}
