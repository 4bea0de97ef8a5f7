//! Mount tables for both stages, and the mount, move and unmount helpers.
//!
//! The mounts are data ([`STAGE1_MOUNTS`], [`STAGE2_MOUNTS`]), so what init
//! mounts, with which flags, can be read in one place.

use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::Mode;
use thiserror::Error;

/// One filesystem to mount.
#[derive(Clone, Copy, Debug)]
pub struct MountSpec {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: MsFlags,
    pub data: Option<&'static str>,
    /// Mode of the mount point if init has to create it.
    pub dir_mode: u32,
}

const NOSUID_NODEV: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);
const NOSUID_NODEV_NOEXEC: MsFlags = NOSUID_NODEV.union(MsFlags::MS_NOEXEC);

/// Stage 1, in order. `/dev` comes first so the console can be reopened on
/// it; these five are later moved into the new root as they are.
/// `/run` and `/tmp` keep exec: containerd and its shims run things there.
pub const STAGE1_MOUNTS: &[MountSpec] = &[
    MountSpec {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: Some("mode=0755"),
        dir_mode: 0o755,
    },
    MountSpec {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
        dir_mode: 0o555,
    },
    MountSpec {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
        dir_mode: 0o555,
    },
    MountSpec {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: NOSUID_NODEV,
        data: Some("mode=0755"),
        dir_mode: 0o755,
    },
    MountSpec {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: NOSUID_NODEV,
        data: Some("mode=1777"),
        dir_mode: 0o1777,
    },
];

/// Stage 2, in order, on top of what stage 1 moved into the new root.
pub const STAGE2_MOUNTS: &[MountSpec] = &[
    MountSpec {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: NOSUID_NODEV_NOEXEC,
        // nsdelegate: containers get their own cgroup subtree to manage;
        // memory_recursiveprot: kubelet's memory.min/low protect whole subtrees.
        data: Some("nsdelegate,memory_recursiveprot"),
        dir_mode: 0o555,
    },
    MountSpec {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: Some("gid=5,mode=0620,ptmxmode=0666"),
        dir_mode: 0o755,
    },
    MountSpec {
        source: "shm",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: NOSUID_NODEV,
        data: Some("mode=1777"),
        dir_mode: 0o1777,
    },
    // Until machined mounts the EPHEMERAL partition over it.
    MountSpec {
        source: "tmpfs",
        target: "/var",
        fstype: "tmpfs",
        flags: NOSUID_NODEV,
        data: Some("mode=0755"),
        dir_mode: 0o755,
    },
];

#[derive(Debug, Error)]
pub enum MountError {
    #[error("creating mount point {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("mounting {fstype} on {target}")]
    Mount {
        fstype: &'static str,
        target: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("mounting {source_path} ({fstype}) on {target}")]
    MountDevice {
        source_path: PathBuf,
        fstype: &'static str,
        target: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("moving mount {from} to {to}")]
    Move {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("remounting {target} read-only")]
    RemountReadOnly {
        target: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("reading {path}")]
    ReadMountinfo {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Create the mount point if needed (mode from the spec) and mount.
pub fn mount_spec(spec: &MountSpec) -> Result<(), MountError> {
    let target = Path::new(spec.target);
    ensure_dir(target, spec.dir_mode)?;
    mount(
        Some(spec.source),
        target,
        Some(spec.fstype),
        spec.flags,
        spec.data,
    )
    .map_err(|source| MountError::Mount {
        fstype: spec.fstype,
        target: target.to_path_buf(),
        source,
    })
}

/// Mount a block device read-only (stage 1's squashfs).
pub fn mount_read_only(
    device: &Path,
    target: &Path,
    fstype: &'static str,
) -> Result<(), MountError> {
    mount(
        Some(device),
        target,
        Some(fstype),
        MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|source| MountError::MountDevice {
        source_path: device.to_path_buf(),
        fstype,
        target: target.to_path_buf(),
        source,
    })
}

/// `mount --move FROM TO`: the same mount, with its open files and
/// submounts, at a new place.
pub fn move_mount(from: &Path, to: &Path) -> Result<(), MountError> {
    mount(Some(from), to, None::<&str>, MsFlags::MS_MOVE, None::<&str>).map_err(|source| {
        MountError::Move {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            source,
        }
    })
}

pub fn remount_read_only(target: &Path) -> Result<(), MountError> {
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|source| MountError::RemountReadOnly {
        target: target.to_path_buf(),
        source,
    })
}

/// `mkdir -m MODE` unless it exists. The mode is set explicitly because the
/// umask would otherwise strip the sticky bit and group/other bits.
pub fn ensure_dir(path: &Path, mode: u32) -> Result<(), MountError> {
    match nix::unistd::mkdir(path, Mode::from_bits_truncate(mode)) {
        Ok(()) => nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            path,
            Mode::from_bits_truncate(mode),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| MountError::CreateDir {
            path: path.to_path_buf(),
            source: e.into(),
        }),
        Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(MountError::CreateDir {
            path: path.to_path_buf(),
            source: e.into(),
        }),
    }
}

/// [`ensure_dir`], then owned by root and group `gid` with `mode`: with the
/// setgid bit, what the daemons create in it belongs to that group (the
/// runtime directory, whose sockets and files apid's group may use as
/// their modes allow, without the daemons needing `chown`).
pub fn ensure_shared_dir(path: &Path, mode: u32, gid: u32) -> Result<(), MountError> {
    ensure_dir(path, mode)?;
    let fail = |e: Errno| MountError::CreateDir {
        path: path.to_path_buf(),
        source: e.into(),
    };
    // chown first: it may clear the setgid bit that chmod then sets.
    nix::unistd::chown(path, Some(0.into()), Some(gid.into())).map_err(fail)?;
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        path,
        Mode::from_bits_truncate(mode),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(fail)
}

/// One line of `/proc/self/mountinfo`, the fields init needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    pub id: u32,
    pub parent: u32,
    pub mount_point: PathBuf,
    pub fstype: String,
}

/// Parse mountinfo (see proc(5)); malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<MountInfo> {
    // 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw
    let mut fields = line.split(' ');
    let id = fields.next()?.parse().ok()?;
    let parent = fields.next()?.parse().ok()?;
    let _dev = fields.next()?;
    let _root = fields.next()?;
    let mount_point = unescape(fields.next()?);
    let _options = fields.next()?;
    // Optional fields, up to the "-" separator.
    for f in fields.by_ref() {
        if f == "-" {
            break;
        }
    }
    let fstype = fields.next()?.to_string();
    Some(MountInfo {
        id,
        parent,
        mount_point: PathBuf::from(mount_point),
        fstype,
    })
}

/// The kernel escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = (oct[0] - b'0') as u32 * 64
                    + (oct[1] - b'0') as u32 * 8
                    + (oct[2] - b'0') as u32;
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points to unmount at shutdown: reverse mount order, but never a
/// mount before one stacked on or below it (after MS_MOVE, mountinfo order
/// is not always parent-before-child). `/` itself is left out: it is
/// remounted read-only instead.
pub fn unmount_order(entries: &[MountInfo]) -> Vec<PathBuf> {
    let mut remaining: Vec<&MountInfo> = entries.iter().collect();
    let mut order = Vec::with_capacity(entries.len());
    while !remaining.is_empty() {
        // The latest-mounted entry that no remaining entry sits on.
        let pick = (0..remaining.len()).rev().find(|&i| {
            let id = remaining[i].id;
            !remaining.iter().any(|m| m.parent == id && m.id != id)
        });
        // A cycle cannot happen in a real mount tree; if the input has one,
        // fall back to plain reverse order rather than loop.
        let i = pick.unwrap_or(remaining.len() - 1);
        let m = remaining.remove(i);
        if m.mount_point != Path::new("/") {
            order.push(m.mount_point.clone());
        }
    }
    order
}

/// The API filesystems: unmounting them is tried, but a failure (usually
/// EBUSY: the console is open on /dev) is expected and quiet.
pub const BASIC_MOUNTS: &[&str] = &["/dev", "/proc", "/sys"];

/// What happened to one mount point at shutdown.
#[derive(Debug, PartialEq, Eq)]
pub enum Unmounted {
    Clean,
    /// A basic mount that was busy: left alone.
    SkippedBusy,
    /// Unmount failed: remounted read-only (if possible) and lazily detached.
    Detached(Errno),
    Failed(Errno),
}

/// Unmount everything in `mountinfo` (read once, first) per
/// [`unmount_order`]; returns what happened to each mount point.
pub fn unmount_all(mountinfo: &Path) -> Result<Vec<(PathBuf, Unmounted)>, MountError> {
    let text = std::fs::read_to_string(mountinfo).map_err(|source| MountError::ReadMountinfo {
        path: mountinfo.to_path_buf(),
        source,
    })?;
    let order = unmount_order(&parse_mountinfo(&text));
    let mut out = Vec::with_capacity(order.len());
    for target in order {
        let result = match umount2(&target, MntFlags::empty()) {
            Ok(()) => Unmounted::Clean,
            Err(_) if BASIC_MOUNTS.iter().any(|b| Path::new(b) == target) => Unmounted::SkippedBusy,
            Err(e) => {
                // Busy: at least make it clean on disk, then detach it so
                // the filesystem goes when its last user does.
                let _ = remount_read_only(&target);
                match umount2(&target, MntFlags::MNT_DETACH) {
                    Ok(()) => Unmounted::Detached(e),
                    Err(e2) => Unmounted::Failed(e2),
                }
            }
        };
        out.push((target, result));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 7:0 / / ro,relatime - squashfs /dev/loop0 ro,errors=continue
16 22 0:5 / /dev rw,nosuid,noexec - devtmpfs devtmpfs rw,size=1000k,mode=755
17 22 0:20 / /proc rw,nosuid,nodev,noexec - proc proc rw
18 22 0:21 / /sys rw,nosuid,nodev,noexec - sysfs sysfs rw
19 22 0:22 / /run rw,nosuid,nodev - tmpfs tmpfs rw,mode=755
20 22 0:23 / /tmp rw,nosuid,nodev - tmpfs tmpfs rw
23 18 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec shared:1 - cgroup2 cgroup2 rw,nsdelegate
24 16 0:25 / /dev/pts rw,nosuid,noexec - devpts devpts rw,gid=5,mode=620
25 16 0:26 / /dev/shm rw,nosuid,nodev - tmpfs shm rw
26 22 0:27 / /var rw,nosuid,nodev - tmpfs tmpfs rw,mode=755
27 26 8:3 / /var rw,relatime - xfs /dev/vda6 rw
28 27 0:28 / /var/lib/my\\040dir rw shared:5 master:2 - overlay overlay rw
";

    #[test]
    fn parses_mountinfo() {
        let m = parse_mountinfo(SAMPLE);
        assert_eq!(m.len(), 12);
        assert_eq!(
            m[0],
            MountInfo {
                id: 22,
                parent: 1,
                mount_point: "/".into(),
                fstype: "squashfs".into()
            }
        );
        assert_eq!(m[6].fstype, "cgroup2");
        assert_eq!(m[11].mount_point, PathBuf::from("/var/lib/my dir"));
        assert_eq!(m[11].fstype, "overlay");
    }

    #[test]
    fn skips_malformed_lines() {
        let m = parse_mountinfo("garbage\n\n1 2 3\n30 22 0:1 / /x rw - tmpfs t rw\n");
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].mount_point, PathBuf::from("/x"));
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape(r"/a\040b\011c\134d"), "/a b\tc\\d");
        assert_eq!(unescape(r"/trailing\04"), r"/trailing\04");
        assert_eq!(unescape(r"\"), r"\");
    }

    #[test]
    fn unmounts_in_reverse_order() {
        let order = unmount_order(&parse_mountinfo(SAMPLE));
        let want: Vec<PathBuf> = [
            "/var/lib/my dir",
            "/var",
            "/var",
            "/dev/shm",
            "/dev/pts",
            "/sys/fs/cgroup",
            "/tmp",
            "/run",
            "/sys",
            "/proc",
            "/dev",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(order, want);
    }

    #[test]
    fn children_go_before_parents_even_if_listed_first() {
        // After MS_MOVE a child can appear before its parent in mountinfo.
        let text = "\
5 1 0:1 / / rw - rootfs rootfs rw
7 9 0:2 / /mnt/a/b rw - tmpfs t rw
9 5 0:3 / /mnt/a rw - tmpfs t rw
11 5 0:4 / /other rw - tmpfs t rw
";
        let order = unmount_order(&parse_mountinfo(text));
        assert_eq!(
            order,
            vec![PathBuf::from("/other"), "/mnt/a/b".into(), "/mnt/a".into()]
        );
    }

    #[test]
    fn tables_are_sane() {
        for spec in STAGE1_MOUNTS.iter().chain(STAGE2_MOUNTS) {
            assert!(spec.target.starts_with('/'), "{spec:?}");
            assert!(spec.flags.contains(MsFlags::MS_NOSUID), "{spec:?}");
        }
        let targets: Vec<_> = STAGE1_MOUNTS.iter().map(|s| s.target).collect();
        assert_eq!(targets, ["/dev", "/proc", "/sys", "/run", "/tmp"]);
        assert_eq!(STAGE1_MOUNTS[4].data, Some("mode=1777"));
    }
}
