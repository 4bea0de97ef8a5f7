//! The benchmark's floor: the same kernel and the same stage-1 modules,
//! with a busybox-static initramfs that brings up the network and answers
//! on a port. Nothing can boot to a network answer much faster on this
//! kernel, so Slate's times are reported against it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, ensure};

/// Console line the floor prints once it listens; `/proc/uptime` follows.
pub const READY: &str = "floor: ready";
/// What the floor answers on every connection.
pub const ANSWER: &str = "floor";

const BUSYBOX: &str = "/bin/busybox";

/// The floor's /init: mount, load the same modules as Slate's stage 1,
/// static address (QEMU's user network is 10.0.2.0/24), listen.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
for m in $(/bin/busybox cat /lib/modules/slate-stage1.list); do /bin/busybox insmod $m 2>/dev/null; done
while ! /bin/busybox ip link set eth0 up 2>/dev/null; do /bin/busybox usleep 10000; done
/bin/busybox ip link set lo up
/bin/busybox ip addr add 10.0.2.15/24 dev eth0
/bin/busybox echo "floor: ready $(/bin/busybox cat /proc/uptime)" > /dev/console
exec /bin/busybox nc -ll -p 50000 -e /bin/busybox echo floor
"#;

/// Builds the floor initramfs from Slate's own: its stage-1 modules and
/// load list are kept; `/init` and `/rootfs.sqsh` are replaced by busybox.
pub fn build(slate_initramfs: &Path, work: &Path) -> anyhow::Result<PathBuf> {
    ensure!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} is missing: install the Debian package busybox-static"
    );
    let tree = work.join("floor-tree");
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(&tree)?;
    let unpack = format!(
        "zstd -dc '{}' | cpio -id --quiet --no-absolute-filenames",
        slate_initramfs.display()
    );
    run(
        Command::new("sh").args(["-c", &unpack]).current_dir(&tree),
        "unpacking Slate's initramfs",
    )?;
    let _ = std::fs::remove_file(tree.join("rootfs.sqsh"));
    std::fs::create_dir_all(tree.join("bin"))?;
    std::fs::copy(BUSYBOX, tree.join("bin/busybox")).context("copying busybox")?;
    let init = tree.join("init");
    let _ = std::fs::remove_file(&init);
    std::fs::write(&init, INIT)?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))?;
    let out = work.join("floor-initramfs.zst");
    let pack = format!(
        "find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | zstd -19 -q -f -o '{}'",
        out.display()
    );
    run(
        Command::new("sh").args(["-c", &pack]).current_dir(&tree),
        "packing the floor initramfs",
    )?;
    Ok(out)
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| what.to_owned())?;
    ensure!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}
