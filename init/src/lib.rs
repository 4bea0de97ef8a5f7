//! `slate-init`: Slate's PID 1.
//!
//! # Background
//!
//! The kernel unpacks the initramfs and runs `/init` as PID 1. The initramfs
//! holds this binary, a few kernel modules with a load list, and
//! `/rootfs.sqsh`, the read-only root filesystem. The same binary is also
//! `/sbin/init` inside that squashfs, so one program runs both stages:
//!
//! * **Stage 1** (PID 1 and [`ROOTFS_IMAGE`] exists): mount `/dev /proc /sys
//!   /run /tmp`, load the modules from [`MODULE_LIST`], attach the squashfs to
//!   a loop device, mount it on [`NEW_ROOT`], move the API filesystems into it,
//!   switch root and exec [`NEXT_INIT`]. See [`stage1`].
//! * **Stage 2** (PID 1, no image: we are on the squashfs): mount cgroup2,
//!   devpts, `/dev/shm`, a tmpfs `/var`, start machined, networkd and apid,
//!   restart them with backoff, reap every process that ends up as our child,
//!   and shut down on request. See [`stage2`].
//!
//! The stage is decided by the filesystem, never by an argument: the kernel
//! command line is user-controlled and must not be able to select stage 1 on
//! a running system.
//!
//! # Signals (how machined asks for a shutdown)
//!
//! machined (or anything privileged) signals PID 1:
//!
//! | signal    | action    | note |
//! |-----------|-----------|------|
//! | `SIGTERM` | power off | |
//! | `SIGUSR2` | power off | |
//! | `SIGINT`  | reboot    | ctrl-alt-del: stage 2 calls `reboot(RB_DISABLE_CAD)`, so the kernel sends SIGINT to PID 1 instead of rebooting at once |
//! | `SIGUSR1` | reboot    | |
//!
//! Every other signal is logged and ignored. The shutdown sequence is in
//! [`shutdown`]: stop restarting, SIGTERM each daemon, wait up to
//! [`shutdown::GRACE`], `kill(-1, SIGKILL)`, reap, sync, unmount in reverse
//! mount order, remount `/` read-only, sync, `reboot(2)`.
//!
//! # Design
//!
//! * Synchronous and single-threaded; no async runtime. All signals are
//!   blocked and taken with `sigtimedwait`, so nothing runs in a signal
//!   handler and no signal is lost between two checks.
//! * Exactly one owner of `waitpid(-1)`: [`reaper::reap_all`]. Daemons are
//!   started with our own fork+exec ([`spawn`]) rather than
//!   `std::process::Command`, whose `Child::wait` (and its internal wait after
//!   a failed exec) would race with the global reaper for the same statuses.
//! * Each daemon gets only what [`daemons::DAEMONS`] gives it: its
//!   capabilities, `no_new_privs` and the [`seccomp`] filters, set between
//!   fork and exec.
//! * The supervision policy ([`supervisor`]) is plain bookkeeping over a
//!   narrow [`host::Host`] trait (spawn, kill, reap, clock, signal wait); tests
//!   drive it with a recording fake and a fake clock.
//! * Console lines look like the kernel's: `[    1.234567] init: message`,
//!   one `write(2)` per line on fd 2 ([`console`]).
//! * PID 1 must never exit or panic (the kernel panics when PID 1 exits):
//!   every fallible step returns an error that is logged; a panic hook writes
//!   panics to the console and the supervision loop runs each iteration under
//!   `catch_unwind`. When everything fails, init powers off; if even that
//!   fails it sleeps forever.
//!
//! # Limitations
//!
//! * Modules are loaded as plain `.ko` files (`finit_module` without
//!   `MODULE_INIT_COMPRESSED_FILE`): the image builder must not compress them.
//! * The initramfs contents are not freed after switch_root (the loop device
//!   keeps `/rootfs.sqsh` in memory anyway; the rest is a few hundred KiB).
//! * `/var` is a tmpfs until machined mounts the EPHEMERAL partition over it.

pub mod cmdline;
pub mod console;
pub mod daemons;
pub mod host;
pub mod loopdev;
pub mod modules;
pub mod mounts;
pub mod reaper;
pub mod seccomp;
pub mod shutdown;
pub mod spawn;
pub mod stage1;
pub mod stage2;
pub mod supervisor;
pub mod switch_root;

#[cfg(test)]
pub(crate) mod testing;

use std::path::Path;

/// The squashfs root image inside the initramfs. Its presence means stage 1.
pub const ROOTFS_IMAGE: &str = "/rootfs.sqsh";
/// The extension layer (containerd, runc, etcd, kubelet), when the image
/// has one: a second initramfs segment.
pub const EXTENSIONS_IMAGE: &str = "/extensions.sqsh";
/// Where the extension layer is mounted inside the new root.
pub const EXTENSIONS_MOUNT: &str = "usr/local";
/// Where stage 1 mounts the squashfs before switching to it.
pub const NEW_ROOT: &str = "/newroot";
/// Modules stage 1 loads: one absolute path per line, in dependency order.
pub const MODULE_LIST: &str = slate_common::constants::STAGE1_MODULE_LIST;
/// Stage 2: this same binary, inside the squashfs.
pub const NEXT_INIT: &str = "/sbin/init";

/// Which half of the boot this process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// In the initramfs: mount the real root and switch to it.
    One,
    /// On the real root: supervise the daemons.
    Two,
}

/// The stage is decided by the filesystem: the root image exists only in
/// the initramfs.
pub fn detect_stage(rootfs_image: &Path) -> Stage {
    if rootfs_image.exists() {
        Stage::One
    } else {
        Stage::Two
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_follows_the_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("rootfs.sqsh");
        assert_eq!(detect_stage(&image), Stage::Two);
        std::fs::write(&image, b"hsqs").unwrap();
        assert_eq!(detect_stage(&image), Stage::One);
    }
}
