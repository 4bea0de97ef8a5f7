//! The release bundle: what a node installs to disk or upgrades to.
//!
//! A bundle is an uncompressed tar (ustar). Its first entry is
//! `manifest.json` (version, kernel command line, and each file's size and
//! SHA-256); the files it names follow, in its order. `slate-image` writes
//! one into `_out/` with every image; `slatectl upgrade` streams it to a
//! node, or the node fetches it by URL with a pinned digest.
//!
//! A reader never holds a bundle in memory: [`read`] hands each file to a
//! sink as it streams by and checks its digest once the last byte has
//! passed. A node writes the files into its inactive boot slot and flips
//! nothing until [`read`] returns `Ok`, so a truncated, altered or
//! mislabelled bundle leaves the node as it was.
//!
//! Tar because people can look inside with the tools they have (`tar tvf`),
//! and the `tar` crate reads it as a stream; compression would gain little
//! (the kernel and initramfs are compressed already).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};

/// The first entry of every bundle.
pub const MANIFEST: &str = "manifest.json";
/// A manifest is a few hundred bytes; anything past this is not one.
const MANIFEST_MAX: u64 = 64 * 1024;
/// No part of a bundle comes near this (the initramfs is ~13 MiB, the
/// extension layer ~35 MiB); a header claiming more is refused before any
/// byte is written.
pub const FILE_MAX: u64 = 512 * 1024 * 1024;
/// GRUB reads a `linux` line into a fixed buffer; Linux takes 2048 bytes on
/// x86. Slate's own line is under 100.
const CMDLINE_MAX: usize = 1024;

/// A file of the bundle, by what it is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    Kernel,
    Initramfs,
    /// The extension layer (containerd, etcd, …): optional.
    Extensions,
    /// GRUB's i386-pc `boot.img`, for the first 440 bytes of the disk.
    BiosBoot,
    /// GRUB's i386-pc `core.img`, for the BIOS boot partition.
    BiosCore,
    /// A FAT image holding `/EFI/BOOT/BOOTX64.EFI`, for the EFI partition.
    Efi,
}

impl Part {
    pub const ALL: [Part; 6] = [
        Part::Kernel,
        Part::Initramfs,
        Part::Extensions,
        Part::BiosBoot,
        Part::BiosCore,
        Part::Efi,
    ];

    /// Its name in the bundle, and in a boot slot.
    pub fn file_name(self) -> &'static str {
        match self {
            Part::Kernel => "vmlinuz",
            Part::Initramfs => "initramfs.zst",
            Part::Extensions => "extensions.cpio",
            Part::BiosBoot => "boot.img",
            Part::BiosCore => "core.img",
            Part::Efi => "efi.img",
        }
    }

    pub fn from_name(name: &str) -> Option<Part> {
        Part::ALL.into_iter().find(|p| p.file_name() == name)
    }

    /// Whether every bundle must have it.
    pub fn required(self) -> bool {
        self != Part::Extensions
    }

    /// The largest it may be: what the place it goes to holds (the MBR's
    /// boot code, GRUB's BIOS loader limit, the EFI partition), else
    /// [`FILE_MAX`]. The node reads the bootloader's parts into memory.
    pub fn max_size(self) -> u64 {
        match self {
            Part::BiosBoot => 512,
            // What GRUB's i386-pc loader takes (util/setup.c).
            Part::BiosCore => 0x78000 - 0x9000,
            Part::Efi => 100 * 1024 * 1024,
            _ => FILE_MAX,
        }
    }

    /// Whether it goes into a boot slot (the rest is the bootloader).
    pub fn in_slot(self) -> bool {
        matches!(self, Part::Kernel | Part::Initramfs | Part::Extensions)
    }
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    /// The Slate version the bundle boots (`os-release`'s VERSION_ID).
    pub version: String,
    /// The kernel command line its boot slot gets.
    pub cmdline: String,
    pub files: Vec<FileDigest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileDigest {
    pub name: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("reading the bundle")]
    Io(#[source] io::Error),
    #[error("{op} {path}")]
    File {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("not a Slate bundle: {0}")]
    Format(String),
    #[error("manifest.json: {0}")]
    Manifest(String),
    #[error(
        "{name}: SHA-256 is {actual}, the manifest says {expected}: the bundle is damaged or altered"
    )]
    Digest {
        name: String,
        expected: String,
        actual: String,
    },
    #[error("the bundle ends before {0}: it is truncated")]
    Missing(String),
    #[error("writing {name} from the bundle")]
    Sink {
        name: String,
        #[source]
        source: io::Error,
    },
}

impl Manifest {
    /// Parses and checks a manifest: a known name for every file, each
    /// once, every required part present, sizes within [`FILE_MAX`], a
    /// version and command line GRUB and `os-release` can carry.
    pub fn parse(bytes: &[u8]) -> Result<Self, BundleError> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| BundleError::Manifest(e.to_string()))?;
        manifest.validate()?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<(), BundleError> {
        let bad = |why: String| Err(BundleError::Manifest(why));
        if !valid_version(&self.version) {
            return bad(format!(
                "version {:?}: 1–64 characters of A–Z a–z 0–9 . _ + -",
                self.version
            ));
        }
        if self
            .cmdline
            .split_whitespace()
            .any(|a| a.starts_with("slate.slot="))
        {
            return bad("cmdline: slate.slot= is the bootloader's to add".into());
        }
        if self.cmdline.len() > CMDLINE_MAX
            || !self.cmdline.bytes().all(|b| (b' '..=b'~').contains(&b))
            || self.cmdline.contains(['"', '\'', '\\', '$', ';'])
        {
            return bad(format!(
                "cmdline: at most {CMDLINE_MAX} printable characters, without quotes, backslashes, $ or ;"
            ));
        }
        let mut seen = BTreeSet::new();
        for file in &self.files {
            let Some(part) = Part::from_name(&file.name) else {
                return bad(format!("files: unknown file {:?}", file.name));
            };
            if !seen.insert(part) {
                return bad(format!("files: {} is listed twice", file.name));
            }
            if file.size > part.max_size() {
                return bad(format!(
                    "files: {} is {} bytes, more than {}",
                    file.name,
                    file.size,
                    part.max_size()
                ));
            }
            if file.sha256.len() != 64
                || !file
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return bad(format!(
                    "files: {}: sha256 must be 64 lowercase hex digits",
                    file.name
                ));
            }
        }
        if let Some(part) = Part::ALL
            .into_iter()
            .find(|p| p.required() && !seen.contains(p))
        {
            return bad(format!("files: {} is missing", part.file_name()));
        }
        Ok(())
    }

    pub fn file(&self, part: Part) -> Option<&FileDigest> {
        self.files.iter().find(|f| f.name == part.file_name())
    }

    /// The total size of the files, for progress bars.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

fn valid_version(v: &str) -> bool {
    (1..=64).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
}

/// Writes a bundle of `files` to `out` (atomically: a temp file, fsynced,
/// renamed) and returns its manifest. Every entry is stamped with `mtime`
/// and owned by root, so the same inputs give the same bytes.
pub fn write(
    out: &Path,
    version: &str,
    cmdline: &str,
    files: &[(Part, &Path)],
    mtime: u64,
) -> Result<Manifest, BundleError> {
    let mut digests = Vec::new();
    for (part, path) in files {
        let mut file = File::open(path).map_err(file_err("opening", path))?;
        let (size, sha256) = digest_of(&mut file).map_err(file_err("reading", path))?;
        digests.push(FileDigest {
            name: part.file_name().to_owned(),
            size,
            sha256,
        });
    }
    let manifest = Manifest {
        version: version.to_owned(),
        cmdline: cmdline.to_owned(),
        files: digests,
    };
    manifest.validate()?;
    let body = serde_json::to_vec_pretty(&manifest).map_err(|e| {
        BundleError::Manifest(format!("encoding: {e}")) // not reachable for this type
    })?;

    let tmp = out.with_extension("tmp");
    let file = File::create(&tmp).map_err(file_err("creating", &tmp))?;
    let mut tar = tar::Builder::new(file);
    tar.mode(tar::HeaderMode::Deterministic);
    let header = |name: &str, size: u64| {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(mtime);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        let _ = h.set_path(name);
        h.set_cksum();
        h
    };
    let append = |tar: &mut tar::Builder<File>, name: &str, size: u64, data: &mut dyn Read| {
        tar.append(&header(name, size), data)
            .map_err(file_err("writing", &tmp))
    };
    append(&mut tar, MANIFEST, body.len() as u64, &mut body.as_slice())?;
    for ((part, path), digest) in files.iter().zip(&manifest.files) {
        let mut file = File::open(path).map_err(file_err("opening", path))?;
        append(&mut tar, part.file_name(), digest.size, &mut file)?;
    }
    let mut file = tar.into_inner().map_err(file_err("writing", &tmp))?;
    file.flush().map_err(file_err("writing", &tmp))?;
    file.sync_all().map_err(file_err("syncing", &tmp))?;
    std::fs::rename(&tmp, out).map_err(file_err("renaming", out))?;
    Ok(manifest)
}

fn file_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BundleError {
    let path = path.to_owned();
    move |source| BundleError::File { op, path, source }
}

/// Size and SHA-256 (hex) of everything `r` yields.
pub fn digest_of(r: &mut dyn Read) -> io::Result<(u64, String)> {
    let mut verifier = Hashing::new(r);
    io::copy(&mut verifier, &mut io::sink())?;
    Ok((
        verifier.count,
        slate_common::hex(verifier.ctx.finish().as_ref()),
    ))
}

/// Counts and hashes what passes through.
struct Hashing<R> {
    inner: R,
    ctx: Context,
    count: u64,
}

impl<R> Hashing<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            ctx: Context::new(&SHA256),
            count: 0,
        }
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.ctx.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Reads only the manifest of the bundle at `path`.
pub fn read_manifest(path: &Path) -> Result<Manifest, BundleError> {
    let file = File::open(path).map_err(file_err("opening", path))?;
    let mut archive = tar::Archive::new(file);
    let mut entries = archive.entries().map_err(BundleError::Io)?;
    manifest_entry(&mut entries)
}

fn manifest_entry<R: Read>(entries: &mut tar::Entries<'_, R>) -> Result<Manifest, BundleError> {
    let mut entry = entries
        .next()
        .ok_or_else(|| BundleError::Format("it is empty".into()))?
        .map_err(|e| BundleError::Format(e.to_string()))?;
    let name = entry_name(&entry)?;
    if name != MANIFEST || entry.size() > MANIFEST_MAX {
        return Err(BundleError::Format(format!(
            "its first entry is {name:?}, not a {MANIFEST} of at most {MANIFEST_MAX} bytes"
        )));
    }
    let mut body = Vec::new();
    entry
        .by_ref()
        .take(MANIFEST_MAX)
        .read_to_end(&mut body)
        .map_err(BundleError::Io)?;
    Manifest::parse(&body)
}

fn entry_name<R: Read>(entry: &tar::Entry<'_, R>) -> Result<String, BundleError> {
    if entry.header().entry_type() != tar::EntryType::Regular {
        return Err(BundleError::Format(
            "it holds something other than plain files".into(),
        ));
    }
    let path = entry
        .path()
        .map_err(|e| BundleError::Format(format!("an entry's name: {e}")))?;
    Ok(path.to_string_lossy().into_owned())
}

/// Hands one file to `sink` and checks its size and digest after the
/// last byte.
fn verify(
    expected: &FileDigest,
    input: &mut dyn Read,
    sink: &mut impl FnMut(Part, &FileDigest, &mut dyn Read) -> io::Result<()>,
) -> Result<(), BundleError> {
    let name = expected.name.clone();
    let part = Part::from_name(&name).ok_or_else(|| BundleError::Format(name.clone()))?;
    let mut hashing = Hashing::new(input.take(expected.size));
    sink(part, expected, &mut hashing).map_err(|source| BundleError::Sink {
        name: name.clone(),
        source,
    })?;
    // Whatever the sink left unread still counts.
    io::copy(&mut hashing, &mut io::sink()).map_err(BundleError::Io)?;
    if hashing.count != expected.size {
        return Err(BundleError::Missing(name));
    }
    let actual = slate_common::hex(hashing.ctx.finish().as_ref());
    if actual != expected.sha256 {
        return Err(BundleError::Digest {
            name,
            expected: expected.sha256.clone(),
            actual,
        });
    }
    Ok(())
}

/// Like [`read`], from a bundle unpacked in `dir` (`manifest.json` and the
/// files it names): how the ISO carries one, beside the files it boots.
pub fn read_dir(
    dir: &Path,
    mut sink: impl FnMut(Part, &FileDigest, &mut dyn Read) -> io::Result<()>,
) -> Result<Manifest, BundleError> {
    let path = dir.join(MANIFEST);
    let mut body = Vec::new();
    File::open(&path)
        .and_then(|f| f.take(MANIFEST_MAX).read_to_end(&mut body))
        .map_err(file_err("reading", &path))?;
    let manifest = Manifest::parse(&body)?;
    for expected in &manifest.files {
        let path = dir.join(&expected.name);
        let mut file = File::open(&path).map_err(file_err("opening", &path))?;
        verify(expected, &mut file, &mut sink)?;
    }
    Ok(manifest)
}

/// A reader that fails once more than its budget has been read.
struct Bounded<R> {
    inner: R,
    left: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.left.get();
        if left == 0 {
            return Err(io::Error::other(
                "the bundle is larger than its manifest accounts for",
            ));
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left.set(left - n as u64);
        Ok(n)
    }
}

/// Streams a bundle from `input`: checks the manifest, then hands each
/// file to `sink` (which must read it to the end) and checks its size and
/// digest after the last byte. Returns the manifest once every file named
/// in it has passed; any error means the sink's output must be discarded.
pub fn read(
    input: impl Read,
    mut sink: impl FnMut(Part, &FileDigest, &mut dyn Read) -> io::Result<()>,
) -> Result<Manifest, BundleError> {
    // The tar crate reads GNU long names and PAX headers whole before it
    // hands out an entry: the stream is bounded by what the manifest
    // accounts for, so a header claiming gigabytes cannot fill memory.
    let left = std::rc::Rc::new(std::cell::Cell::new(MANIFEST_MAX + 3 * 512));
    let bounded = Bounded {
        inner: input,
        left: std::rc::Rc::clone(&left),
    };
    let mut archive = tar::Archive::new(bounded);
    let mut entries = archive.entries().map_err(BundleError::Io)?;
    let manifest = manifest_entry(&mut entries)?;
    // Every file, its header and its padding to 512, and the end blocks.
    let files = manifest.files.len() as u64;
    left.set(manifest.total_size() + 1024 * (files + 2));
    for expected in &manifest.files {
        let mut entry = entries
            .next()
            .ok_or_else(|| BundleError::Missing(expected.name.clone()))?
            .map_err(|e| BundleError::Format(e.to_string()))?;
        let name = entry_name(&entry)?;
        if name != expected.name {
            return Err(BundleError::Format(format!(
                "found {name:?} where the manifest lists {:?}",
                expected.name
            )));
        }
        if entry.size() != expected.size {
            return Err(BundleError::Format(format!(
                "{name} is {} bytes, the manifest says {}",
                entry.size(),
                expected.size
            )));
        }
        verify(expected, &mut entry, &mut sink)?;
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(dir: &Path) -> Vec<(Part, PathBuf)> {
        Part::ALL
            .into_iter()
            .map(|p| {
                let path = dir.join(p.file_name());
                let mut data = format!("contents of {}", p.file_name()).repeat(300);
                data.truncate(p.max_size() as usize);
                std::fs::write(&path, data).unwrap();
                (p, path)
            })
            .collect()
    }

    fn bundle(dir: &Path) -> (PathBuf, Manifest) {
        let files = parts(dir);
        let refs: Vec<(Part, &Path)> = files.iter().map(|(p, f)| (*p, f.as_path())).collect();
        let out = dir.join("bundle.tar");
        let manifest = write(&out, "1.2.3-test", "console=ttyS0 panic=-1", &refs, 1).unwrap();
        (out, manifest)
    }

    type Files = Vec<(Part, Vec<u8>)>;

    fn read_all(bytes: &[u8]) -> Result<(Manifest, Files), BundleError> {
        let mut got = Vec::new();
        let manifest = read(bytes, |part, _, r| {
            let mut data = Vec::new();
            r.read_to_end(&mut data)?;
            got.push((part, data));
            Ok(())
        })?;
        Ok((manifest, got))
    }

    #[test]
    fn a_written_bundle_reads_back_file_for_file() {
        let dir = tempfile::tempdir().unwrap();
        let (out, manifest) = bundle(dir.path());
        assert_eq!(read_manifest(&out).unwrap(), manifest);
        let (read_back, files) = read_all(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(read_back, manifest);
        assert_eq!(files.len(), Part::ALL.len());
        for (part, data) in files {
            assert_eq!(
                data,
                std::fs::read(dir.path().join(part.file_name())).unwrap()
            );
        }
        // Reproducible: the same inputs give the same bytes.
        let first = std::fs::read(&out).unwrap();
        bundle(dir.path());
        assert_eq!(std::fs::read(&out).unwrap(), first);
    }

    #[test]
    fn a_flipped_byte_is_named_by_file() {
        let dir = tempfile::tempdir().unwrap();
        let (out, _) = bundle(dir.path());
        let mut bytes = std::fs::read(&out).unwrap();
        // Inside core.img's data (not boot.img's tail before its header).
        let at = bytes
            .windows(28)
            .position(|w| w == b"core.imgcontents of core.img")
            .unwrap();
        bytes[at] ^= 1;
        let err = read_all(&bytes).unwrap_err();
        assert!(
            matches!(&err, BundleError::Digest { name, .. } if name == "core.img"),
            "{err}"
        );
    }

    #[test]
    fn a_truncated_bundle_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (out, _) = bundle(dir.path());
        let bytes = std::fs::read(&out).unwrap();
        for cut in [0, 100, 1500, bytes.len() / 2, bytes.len() - 4000] {
            assert!(read_all(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn manifests_are_checked() {
        let good = Manifest {
            version: "1.0".into(),
            cmdline: "console=ttyS0".into(),
            files: Part::ALL
                .into_iter()
                .filter(|p| p.required())
                .map(|p| FileDigest {
                    name: p.file_name().into(),
                    size: 1,
                    sha256: "0".repeat(64),
                })
                .collect(),
        };
        assert!(good.validate().is_ok());
        let refuse = |change: &dyn Fn(&mut Manifest), what: &str| {
            let mut m = good.clone();
            change(&mut m);
            let err = m.validate().unwrap_err().to_string();
            assert!(err.contains(what), "{err} lacks {what}");
        };
        refuse(&|m| m.version = "1.0; rm".into(), "version");
        refuse(&|m| m.version = String::new(), "version");
        refuse(&|m| m.cmdline = "a\nb".into(), "cmdline");
        refuse(&|m| m.cmdline = "init=$x".into(), "cmdline");
        refuse(
            &|m| m.files[0].name = "../etc/passwd".into(),
            "unknown file",
        );
        refuse(
            &|m| {
                let f = m.files[0].clone();
                m.files.push(f)
            },
            "twice",
        );
        refuse(
            &|m| m.files.retain(|f| f.name != "vmlinuz"),
            "vmlinuz is missing",
        );
        refuse(&|m| m.files[0].size = FILE_MAX + 1, "bytes");
        refuse(&|m| m.files[0].sha256 = "AB".repeat(32), "sha256");
        refuse(&|m| m.cmdline = "quiet slate.slot=B".into(), "slate.slot");
        refuse(
            &|m| {
                let boot = m.files.iter_mut().find(|f| f.name == "boot.img").unwrap();
                boot.size = 513;
            },
            "boot.img is 513 bytes",
        );
        assert!(Manifest::parse(b"{\"version\": 1}").is_err());
        assert!(
            Manifest::parse(br#"{"version":"1","cmdline":"","files":[],"extra":1}"#)
                .unwrap_err()
                .to_string()
                .contains("extra")
        );
    }

    #[test]
    fn a_header_claiming_more_than_the_manifest_is_refused_without_reading_it() {
        // A GNU long-name entry of 1 GiB after the manifest: tar would read
        // it whole into memory.
        let dir = tempfile::tempdir().unwrap();
        let (out, _) = bundle(dir.path());
        let bytes = std::fs::read(&out).unwrap();
        let manifest_end = 512 + 1024; // header + body padded
        let mut evil = bytes[..manifest_end].to_vec();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_size(1 << 30);
        h.set_cksum();
        evil.extend_from_slice(h.as_bytes());
        // An endless stream of junk behind it.
        let junk = std::io::repeat(b'x');
        let err = read(std::io::Read::chain(evil.as_slice(), junk), |_, _, r| {
            std::io::copy(r, &mut std::io::sink()).map(drop)
        })
        .unwrap_err();
        assert!(!err.to_string().is_empty());
    }

    #[test]
    fn something_other_than_a_bundle_is_refused() {
        assert!(read_all(b"").is_err());
        assert!(read_all(&[0u8; 4096]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other.tar");
        let mut tar = tar::Builder::new(File::create(&other).unwrap());
        let mut h = tar::Header::new_ustar();
        h.set_size(2);
        h.set_cksum();
        tar.append_data(&mut h, "README", &b"hi"[..]).unwrap();
        tar.into_inner().unwrap();
        let err = read_all(&std::fs::read(&other).unwrap()).unwrap_err();
        assert!(err.to_string().contains("README"), "{err}");
    }
}
