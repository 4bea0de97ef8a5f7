//! A deterministic newc ("070701") cpio archive, as the kernel's initramfs
//! unpacker reads it.
//!
//! The entry headers are written by the `cpio` crate (it supports device
//! numbers, explicit inode numbers and mtimes). What this module adds is
//! determinism and no need for root: entries are described in memory
//! (device nodes included, never `mknod`-ed on the host), sorted by path
//! with parents first, owned by 0:0, stamped with one mtime and numbered
//! with sequential inodes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// What an entry holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Dir,
    /// Contents streamed from a host file at write time.
    File(PathBuf),
    /// Contents given inline.
    Data(Vec<u8>),
    Symlink(String),
    CharDev {
        major: u32,
        minor: u32,
    },
}

/// An archive under construction. Paths are relative (`dev/console`); the
/// kernel unpacks them relative to its rootfs.
#[derive(Debug, Default)]
pub struct Archive {
    /// Keyed by path components so that `a` < `a/b` < `a-b` never reorders
    /// a child before its parent.
    entries: BTreeMap<Vec<String>, (u32, Body)>,
}

/// Writing the archive failed.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    #[error("reading {path} for the archive")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is larger than newc's 4 GiB limit")]
    TooLarge { path: String },
    #[error("{path} changed size while being archived")]
    Changed { path: String },
    #[error("writing the archive")]
    Write(#[source] io::Error),
}

fn key(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) an entry with permission bits `perm`, creating
    /// missing parent directories with mode 0755.
    pub fn add(&mut self, path: &str, perm: u32, body: Body) {
        let key = key(path);
        for depth in 1..key.len() {
            self.entries
                .entry(key[..depth].to_vec())
                .or_insert((0o755, Body::Dir));
        }
        self.entries.insert(key, (perm & 0o7777, body));
    }

    pub fn dir(&mut self, path: &str) {
        self.add(path, 0o755, Body::Dir);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the archive: entries in path order with inodes 1, 2, …, all
    /// owned by 0:0 with mtime `mtime`, then the `TRAILER!!!` entry.
    pub fn write<W: Write>(&self, mut out: W, mtime: u32) -> Result<W, CpioError> {
        for (ino, (components, (perm, body))) in (1u32..).zip(&self.entries) {
            let name = components.join("/");
            let (kind, nlink) = match body {
                Body::Dir => (S_IFDIR, 2),
                Body::File(_) | Body::Data(_) => (S_IFREG, 1),
                Body::Symlink(_) => (S_IFLNK, 1),
                Body::CharDev { .. } => (S_IFCHR, 1),
            };
            let mut builder = cpio::newc::Builder::new(&name)
                .ino(ino)
                .mode(kind | perm)
                .uid(0)
                .gid(0)
                .nlink(nlink)
                .mtime(mtime);
            if let Body::CharDev { major, minor } = body {
                builder = builder.rdev_major(*major).rdev_minor(*minor);
            }
            out = match body {
                Body::Dir | Body::CharDev { .. } => {
                    builder.write(out, 0).finish().map_err(CpioError::Write)?
                }
                Body::Data(bytes) => write_bytes(builder, out, &name, bytes)?,
                Body::Symlink(target) => write_bytes(builder, out, &name, target.as_bytes())?,
                Body::File(path) => write_file(builder, out, &name, path)?,
            };
        }
        cpio::newc::trailer(out).map_err(CpioError::Write)
    }
}

fn size_u32(name: &str, len: u64) -> Result<u32, CpioError> {
    u32::try_from(len).map_err(|_| CpioError::TooLarge {
        path: name.to_owned(),
    })
}

fn write_bytes<W: Write>(
    builder: cpio::newc::Builder,
    out: W,
    name: &str,
    bytes: &[u8],
) -> Result<W, CpioError> {
    let mut writer = builder.write(out, size_u32(name, bytes.len() as u64)?);
    writer.write_all(bytes).map_err(CpioError::Write)?;
    writer.finish().map_err(CpioError::Write)
}

fn write_file<W: Write>(
    builder: cpio::newc::Builder,
    out: W,
    name: &str,
    path: &Path,
) -> Result<W, CpioError> {
    let read_err = |source| CpioError::Read {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let len = file.metadata().map_err(read_err)?.len();
    let mut writer = builder.write(out, size_u32(name, len)?);
    // Never copy more than the header claims, even if the file grew.
    let copied = io::copy(&mut io::Read::take(file, len), &mut writer).map_err(read_err)?;
    if copied != len {
        // The crate pads only a complete body; a short one would corrupt
        // every following header.
        return Err(CpioError::Changed {
            path: name.to_owned(),
        });
    }
    writer.finish().map_err(CpioError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn sample(dir: &Path) -> Archive {
        let file = dir.join("init");
        std::fs::write(&file, b"#!hello\n").unwrap();
        let mut a = Archive::new();
        a.add("init", 0o755, Body::File(file));
        a.dir("proc");
        a.add("dev/console", 0o600, Body::CharDev { major: 5, minor: 1 });
        a.add("dev/null", 0o666, Body::CharDev { major: 1, minor: 3 });
        a.add("lib-x/list", 0o644, Body::Data(b"a\nbc\n".to_vec()));
        a.add("lib/modules/k/a.ko", 0o644, Body::Data(vec![7; 5]));
        a.add("etc/link", 0o777, Body::Symlink("/run/x".into()));
        a
    }

    fn read_back(bytes: &[u8]) -> Vec<(String, u32, u32, u32, u32, Vec<u8>)> {
        let mut entries = Vec::new();
        let mut rest = bytes;
        loop {
            let mut reader = cpio::newc::Reader::new(rest).unwrap();
            let e = reader.entry();
            if e.is_trailer() {
                break;
            }
            let info = (
                e.name().to_owned(),
                e.ino(),
                e.mode(),
                e.mtime(),
                (e.rdev_major() << 8) | e.rdev_minor(),
            );
            let mut data = Vec::new();
            io::Read::read_to_end(&mut reader, &mut data).unwrap();
            entries.push((info.0, info.1, info.2, info.3, info.4, data));
            rest = reader.finish().unwrap();
        }
        entries
    }

    #[test]
    fn entries_are_sorted_numbered_and_stamped() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = sample(dir.path()).write(Vec::new(), 1_700_000_000).unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let entries = read_back(&bytes);
        let names: Vec<_> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "dev/null",
                "etc",
                "etc/link",
                "init",
                "lib",
                "lib/modules",
                "lib/modules/k",
                "lib/modules/k/a.ko",
                "lib-x",
                "lib-x/list",
                "proc"
            ]
        );
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.1, i as u32 + 1, "sequential inode for {}", e.0);
            assert_eq!(e.3, 1_700_000_000);
        }
        let console = &entries[1];
        assert_eq!((console.2, console.4), (0o020_600, (5 << 8) | 1));
        assert_eq!(entries[2].2, 0o020_666);
        assert_eq!(entries[4].2, 0o120_777);
        assert_eq!(entries[4].5, b"/run/x");
        assert_eq!(entries[5].5, b"#!hello\n");
        assert_eq!(entries[11].5, b"a\nbc\n");
    }

    #[test]
    fn output_is_byte_identical_across_runs() {
        let dir = tempfile::tempdir().unwrap();
        let a = sample(dir.path()).write(Vec::new(), 0).unwrap();
        let b = sample(dir.path()).write(Vec::new(), 0).unwrap();
        assert_eq!(a, b);
    }

    /// Cross-check with GNU cpio when it is installed (Debian package cpio).
    #[test]
    fn gnu_cpio_lists_the_archive() {
        if Command::new("cpio").arg("--version").output().is_err() {
            eprintln!("SKIP: GNU cpio not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.cpio");
        sample(dir.path())
            .write(File::create(&path).unwrap(), 0)
            .unwrap();
        let out = Command::new("cpio")
            .args(["-itv", "--quiet", "-F"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let listing = String::from_utf8(out.stdout).unwrap();
        let console = listing
            .lines()
            .find(|l| l.ends_with(" dev/console"))
            .unwrap();
        assert!(console.starts_with("crw-------"), "{console}");
        assert!(console.contains("5,"), "{console}");
        let link = listing.lines().find(|l| l.contains("etc/link")).unwrap();
        assert!(link.ends_with("etc/link -> /run/x"), "{link}");
        assert_eq!(listing.lines().count(), 13);
    }
}
