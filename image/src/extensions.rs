//! The extension layer: the programs a Kubernetes node runs that the base
//! image does not carry (containerd, runc, etcd from Debian; a kubelet the
//! user supplies), in a squashfs of their own that init mounts read-only
//! on `/usr/local`.
//!
//! Why a layer of its own: those programs are ~90 MB, the base root stays
//! within its 10 MiB budget, and a node boots the same base with or without
//! them. The layer ships as `extensions.cpio`, another initramfs segment
//! holding `extensions.sqsh`: bootloaders load both files one after the
//! other (GRUB's `initrd A B`) and the kernel unpacks concatenated cpio
//! archives into one tree, as Talos does with its system extensions. The
//! segment is not compressed again (squashfs already is), and it goes
//! first: the kernel finds an archive after an uncompressed one, but
//! reports "invalid magic" for one after a zstd-compressed one.
//!
//! Layout: `bin/NAME` for each program and `lib/` for the shared libraries
//! they load (found with `ldd` on the build host, like
//! [`crate::hostbin`]); services run with `LD_LIBRARY_PATH=/usr/local/lib`.
//! Container image archives (`--image-archive`, OCI or docker archives)
//! go to `images/`, with containerd's `ctr`, which machined imports them
//! with into containerd's `k8s.io` namespace before kubelet starts: a
//! site without registry access runs the control plane from them.

use std::fs;
use std::path::{Path, PathBuf};

use crate::cpio::{Archive, Body};
use crate::exec::{self, ExecError};
use crate::hostbin::{self, HostBinError};
use crate::tools::{Tool, Toolbox};

/// Debian packages the image takes extensions from, and the programs in
/// each (path in the package, name in the layer).
pub const DEBIAN: &[(&str, &[(&str, &str)])] = &[
    (
        "containerd",
        &[
            ("usr/bin/containerd", "containerd"),
            ("usr/bin/containerd-shim-runc-v2", "containerd-shim-runc-v2"),
        ],
    ),
    ("runc", &[("usr/sbin/runc", "runc")]),
    ("etcd-server", &[("usr/bin/etcd", "etcd")]),
    // The CNI plugins flannel (and most CNIs) delegate to; machined links
    // them into containerd's CNI plugin directory.
    (
        "containernetworking-plugins",
        &[
            ("usr/lib/cni/bridge", "bridge"),
            ("usr/lib/cni/host-local", "host-local"),
            ("usr/lib/cni/loopback", "loopback"),
            ("usr/lib/cni/portmap", "portmap"),
        ],
    ),
];

/// One program of the layer: `bin/NAME` from `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    pub name: String,
    pub path: PathBuf,
}

impl std::str::FromStr for Extension {
    type Err = String;

    /// `NAME=PATH`, as `--extension kubelet=/path/to/kubelet` takes it.
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, path) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected NAME=PATH, e.g. kubelet=/usr/bin/kubelet"))?;
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !valid {
            return Err(format!(
                "{name:?}: a program name is letters, digits, '-', '_' and '.'"
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            path: PathBuf::from(path),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExtensionError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("downloading the Debian package {package}")]
    Download {
        package: String,
        #[source]
        source: ExecError,
    },
    #[error("unpacking {deb}")]
    Extract {
        deb: PathBuf,
        #[source]
        source: ExecError,
    },
    #[error("Debian package {package} has no {path}")]
    Missing { package: String, path: String },
    #[error("extension {name}: {path} is not a file")]
    NotAFile { name: String, path: PathBuf },
    #[error("extension {0} is given twice")]
    Duplicate(String),
    #[error(transparent)]
    Service(#[from] slate_config::extension_service::ExtensionServiceError),
    #[error(
        "unknown Debian extension {0:?} (known: containerd, runc, etcd-server, containernetworking-plugins)"
    )]
    Unknown(String),
    #[error(transparent)]
    Libraries(#[from] HostBinError),
    #[error("building extensions.sqsh")]
    Mksquashfs(#[source] ExecError),
    #[error("writing extensions.cpio")]
    Cpio(#[source] crate::cpio::CpioError),
    #[error("image archive {0}: not a .tar file")]
    NotAnArchive(PathBuf),
    #[error("image archive {0} is given twice (by file name)")]
    DuplicateArchive(String),
    #[error("image archives need containerd's ctr in the layer (--debian-extensions containerd)")]
    NoCtr,
}

/// Where image archives go in the layer, and where machined finds them
/// (`/usr/local/images`).
pub const IMAGES_DIR: &str = "images";

/// containerd's `ctr`, from the Debian containerd package in the cache:
/// the layer carries it only with image archives to import.
pub fn ctr(tools: &Toolbox, cache: &Path) -> Result<Extension, ExtensionError> {
    let dir = cache.join("extensions");
    fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    let root = dir.join("containerd");
    if !root.join(".complete").exists() {
        unpack(tools, "containerd", &dir, &root)?;
    }
    let path = root.join("usr/bin/ctr");
    if !path.is_file() {
        return Err(ExtensionError::Missing {
            package: "containerd".into(),
            path: "usr/bin/ctr".into(),
        });
    }
    Ok(Extension {
        name: "ctr".into(),
        path,
    })
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ExtensionError {
    let path = path.to_owned();
    move |source| ExtensionError::Io { op, path, source }
}

/// The programs of the Debian `packages` (names from [`DEBIAN`]),
/// downloaded once into `cache/extensions` (whatever version apt offers
/// then; delete the cache to take a newer one) and unpacked there.
pub fn debian(
    tools: &Toolbox,
    packages: &[String],
    cache: &Path,
) -> Result<Vec<Extension>, ExtensionError> {
    let dir = cache.join("extensions");
    fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    let mut out = Vec::new();
    for package in packages {
        let (_, programs) = DEBIAN
            .iter()
            .find(|(p, _)| p == package)
            .ok_or_else(|| ExtensionError::Unknown(package.clone()))?;
        let root = dir.join(package);
        if !root.join(".complete").exists() {
            unpack(tools, package, &dir, &root)?;
        }
        for (path, name) in *programs {
            let file = root.join(path);
            if !file.is_file() {
                return Err(ExtensionError::Missing {
                    package: package.clone(),
                    path: (*path).to_owned(),
                });
            }
            out.push(Extension {
                name: (*name).to_owned(),
                path: file,
            });
        }
    }
    Ok(out)
}

/// Downloads `package` into a scratch directory and unpacks it at `root`,
/// marking it complete last, so an interrupted run is redone.
fn unpack(tools: &Toolbox, package: &str, dir: &Path, root: &Path) -> Result<(), ExtensionError> {
    let scratch = dir.join(format!("{package}.download"));
    if scratch.exists() {
        fs::remove_dir_all(&scratch).map_err(io("removing", &scratch))?;
    }
    fs::create_dir_all(&scratch).map_err(io("creating", &scratch))?;
    exec::run(
        tools
            .command(Tool::AptGet)
            .arg("download")
            .arg(package)
            .current_dir(&scratch),
    )
    .map_err(|source| ExtensionError::Download {
        package: package.to_owned(),
        source,
    })?;
    let deb = fs::read_dir(&scratch)
        .map_err(io("reading", &scratch))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| ExtensionError::Missing {
            package: package.to_owned(),
            path: "(a .deb from apt-get download)".into(),
        })?;
    if root.exists() {
        fs::remove_dir_all(root).map_err(io("removing", root))?;
    }
    exec::run(tools.command(Tool::DpkgDeb).arg("-x").arg(&deb).arg(root)).map_err(|source| {
        ExtensionError::Extract {
            deb: deb.clone(),
            source,
        }
    })?;
    fs::remove_dir_all(&scratch).map_err(io("removing", &scratch))?;
    let marker = root.join(".complete");
    fs::write(&marker, format!("{}\n", deb.display())).map_err(io("writing", &marker))
}

/// Builds `work/extensions.cpio` from `extensions` and the service
/// declarations `services` (checked here, so a bad one fails the build
/// with its file and line, not the node) and returns its path.
pub fn build(
    tools: &Toolbox,
    work: &Path,
    extensions: &[Extension],
    services: &[PathBuf],
    archives: &[PathBuf],
    epoch: u64,
) -> Result<PathBuf, ExtensionError> {
    use slate_config::extension_service::{DIR_IN_LAYER, ExtensionService};
    let staging = work.join("extensions");
    // A layer of an earlier build must not leak into this one.
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io("removing", &staging))?;
    }
    let declared = staging.join(DIR_IN_LAYER);
    for path in services {
        let text = fs::read_to_string(path).map_err(io("reading", path))?;
        let service = ExtensionService::parse(&text, &path.display().to_string())?;
        fs::create_dir_all(&declared).map_err(io("creating", &declared))?;
        let dest = declared.join(format!("{}.yaml", service.name));
        if dest.exists() {
            return Err(ExtensionError::Duplicate(service.name));
        }
        copy(path, &dest, 0o644)?;
    }
    for dir in ["bin", "lib"] {
        let d = staging.join(dir);
        fs::create_dir_all(&d).map_err(io("creating", &d))?;
    }
    let mut seen = std::collections::BTreeSet::new();
    for ext in extensions {
        if !seen.insert(ext.name.clone()) {
            return Err(ExtensionError::Duplicate(ext.name.clone()));
        }
        if !ext.path.is_file() {
            return Err(ExtensionError::NotAFile {
                name: ext.name.clone(),
                path: ext.path.clone(),
            });
        }
        copy(&ext.path, &staging.join("bin").join(&ext.name), 0o755)?;
        // A static program (an upstream kubelet) needs nothing, and ldd
        // only says so in words.
        if !is_dynamic(&ext.path).map_err(io("reading", &ext.path))? {
            continue;
        }
        for lib in hostbin::libraries(tools, &ext.path)? {
            let Some(name) = lib.file_name() else {
                continue;
            };
            copy(&lib, &staging.join("lib").join(name), 0o755)?;
        }
    }
    if !archives.is_empty() && !seen.contains("ctr") {
        return Err(ExtensionError::NoCtr);
    }
    let images = staging.join(IMAGES_DIR);
    let mut names = std::collections::BTreeSet::new();
    for archive in archives {
        let name = archive
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| n.ends_with(".tar") && archive.is_file())
            .ok_or_else(|| ExtensionError::NotAnArchive(archive.clone()))?;
        if !names.insert(name.to_owned()) {
            return Err(ExtensionError::DuplicateArchive(name.to_owned()));
        }
        fs::create_dir_all(&images).map_err(io("creating", &images))?;
        copy(archive, &images.join(name), 0o644)?;
    }
    let sqsh = work.join("extensions.sqsh");
    // Level 6, not the base image's 19: ~90 MB of Go binaries take seconds
    // instead of a minute, for a few percent of size.
    crate::rootfs::squash(tools, &staging, &sqsh, 6, epoch).map_err(ExtensionError::Mksquashfs)?;
    let mut archive = Archive::new();
    archive.add(
        crate::initramfs::EXTENSIONS_PATH,
        0o644,
        Body::File(sqsh.clone()),
    );
    let out = work.join("extensions.cpio");
    let file = fs::File::create(&out).map_err(io("creating", &out))?;
    let mtime = u32::try_from(epoch).unwrap_or(0);
    archive
        .write(std::io::BufWriter::new(file), mtime)
        .map_err(ExtensionError::Cpio)?;
    Ok(out)
}

/// Whether the ELF file at `path` asks for a dynamic loader (has a
/// PT_INTERP program header); anything else (a script) counts as static.
fn is_dynamic(path: &Path) -> std::io::Result<bool> {
    const PT_INTERP: u32 = 3;
    let bytes = fs::read(path)?;
    // 64-bit little-endian ELF only (the image is x86_64).
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return Ok(false);
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap_or([0; 8])) as usize;
    let (entsize, count) = (u16_at(0x36), u16_at(0x38));
    Ok((0..count).any(|i| {
        let at = phoff.saturating_add(i.saturating_mul(entsize));
        bytes
            .get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]) == PT_INTERP)
    }))
}

fn copy(src: &Path, dest: &Path, mode: u32) -> Result<(), ExtensionError> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::copy(src, dest).map_err(io("copying", src))?;
    fs::set_permissions(dest, fs::Permissions::from_mode(mode))
        .map_err(io("setting the mode of", dest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_arguments_name_a_program_and_a_path() {
        let e: Extension = "kubelet=/opt/k8s/kubelet".parse().unwrap();
        assert_eq!(e.name, "kubelet");
        assert_eq!(e.path, PathBuf::from("/opt/k8s/kubelet"));
        assert!(
            "kubelet"
                .parse::<Extension>()
                .unwrap_err()
                .contains("NAME=PATH")
        );
        assert!("../x=/bin/true".parse::<Extension>().is_err());
        assert!("=/bin/true".parse::<Extension>().is_err());
    }

    #[test]
    fn static_and_dynamic_programs_are_told_apart() {
        // This test binary is built static (crt-static), /bin/sh is not.
        let me = std::env::current_exe().unwrap();
        assert!(is_dynamic(Path::new("/bin/sh")).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("script");
        fs::write(&script, "#!/bin/sh\n").unwrap();
        assert!(!is_dynamic(&script).unwrap());
        // Whatever this build is, the answer must match ldd's view.
        let ldd = std::process::Command::new("ldd").arg(&me).output().unwrap();
        let ldd_dynamic = ldd.status.success()
            && !String::from_utf8_lossy(&ldd.stdout).contains("statically linked");
        assert_eq!(is_dynamic(&me).unwrap(), ldd_dynamic);
    }

    #[test]
    fn every_debian_package_names_its_programs() {
        for (package, programs) in DEBIAN {
            assert!(!programs.is_empty(), "{package}");
        }
    }
}
