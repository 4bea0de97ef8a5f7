//! Fetching Debian's kernel: metapackage resolution, download, extraction,
//! depmod, with a cache under `<out>/cache/`.
//!
//! The metapackages (`linux-image-cloud-amd64`, `linux-image-amd64`) only
//! depend on the real, versioned package, so we resolve that first with
//! `apt-cache depends`. The real package name is `linux-image-KVER`, which
//! also gives the module directory name.

use std::fs;
use std::path::{Path, PathBuf};

use crate::KernelFlavor;
use crate::exec::{self, ExecError};
use crate::tools::{Tool, Toolbox};

/// Written last into an extracted tree: its absence means the extraction or
/// depmod was interrupted, and the tree is redone from the .deb.
const COMPLETE_MARKER: &str = ".slate-complete";

/// A failed kernel step, naming the package or path.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("resolving the kernel package behind {meta}")]
    Resolve {
        meta: String,
        #[source]
        source: ExecError,
    },
    #[error(
        "`apt-cache depends {meta}` names no linux-image package (is the apt index current? try `apt-get update`)"
    )]
    NoDependency { meta: String },
    #[error("`apt-cache show {package}` gives no Version")]
    NoVersion { package: String },
    #[error("looking up the version of {package}")]
    Show {
        package: String,
        #[source]
        source: ExecError,
    },
    #[error("downloading {package}")]
    Download {
        package: String,
        #[source]
        source: ExecError,
    },
    #[error("extracting {deb}")]
    Extract {
        deb: PathBuf,
        #[source]
        source: ExecError,
    },
    #[error("running depmod in {dir}")]
    Depmod {
        dir: PathBuf,
        #[source]
        source: ExecError,
    },
    #[error("{path}: expected in package {package} but missing")]
    Layout { package: String, path: PathBuf },
    #[error("kernel config {path} lacks {option}=y: the initramfs could not be decompressed")]
    Config { path: PathBuf, option: &'static str },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> KernelError {
    let path = path.to_owned();
    move |source| KernelError::Io { op, path, source }
}

/// An extracted, depmod-ed kernel package.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Real package name, e.g. `linux-image-6.1.0-56-cloud-amd64`.
    pub package: String,
    /// Debian package version, e.g. `6.1.192-2`.
    pub version: String,
    /// Kernel release (`uname -r`), e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    /// Root of the extracted package.
    pub root: PathBuf,
}

impl Kernel {
    pub fn vmlinuz(&self) -> PathBuf {
        self.root.join(format!("boot/vmlinuz-{}", self.release))
    }

    pub fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }

    pub fn config(&self) -> PathBuf {
        self.root.join(format!("boot/config-{}", self.release))
    }
}

/// The metapackage for a flavour.
pub fn metapackage(flavor: KernelFlavor) -> &'static str {
    match flavor {
        KernelFlavor::Cloud => "linux-image-cloud-amd64",
        KernelFlavor::Metal => "linux-image-amd64",
    }
}

/// Picks the real kernel package out of `apt-cache depends META` output:
/// the first `Depends:` on a `linux-image-*` package. Virtual packages
/// (`<name>`) are skipped; an alternative (`|Depends:`) counts too.
pub fn parse_depends(output: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let rest = line
            .trim()
            .trim_start_matches('|')
            .strip_prefix("Depends:")?
            .trim();
        (rest.starts_with("linux-image-") && !rest.contains('<')).then(|| rest.to_owned())
    })
}

/// The candidate's `Version:` from `apt-cache show --no-all-versions`.
pub fn parse_version(output: &str) -> Option<String> {
    output
        .lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .map(|v| v.trim().to_owned())
}

/// Resolves, downloads (unless cached) and extracts the kernel for `flavor`.
pub fn fetch(tools: &Toolbox, flavor: KernelFlavor, cache: &Path) -> Result<Kernel, KernelError> {
    let meta = metapackage(flavor);
    let depends =
        exec::stdout(tools.command(Tool::AptCache).args(["depends", meta])).map_err(|source| {
            KernelError::Resolve {
                meta: meta.to_owned(),
                source,
            }
        })?;
    let package = parse_depends(&depends).ok_or_else(|| KernelError::NoDependency {
        meta: meta.to_owned(),
    })?;
    let show =
        exec::stdout(
            tools
                .command(Tool::AptCache)
                .args(["show", "--no-all-versions", &package]),
        )
        .map_err(|source| KernelError::Show {
            package: package.clone(),
            source,
        })?;
    let version = parse_version(&show).ok_or_else(|| KernelError::NoVersion {
        package: package.clone(),
    })?;
    let release = package
        .strip_prefix("linux-image-")
        .expect("parse_depends only returns linux-image-*")
        .to_owned();

    fs::create_dir_all(cache).map_err(io("creating", cache))?;
    // apt-get names the file with the epoch's ':' escaped as %3a.
    let file_version = version.replace(':', "%3a");
    let deb = cache.join(format!("{package}_{file_version}_amd64.deb"));
    if !deb.is_file() {
        download(tools, &package, &version, &deb, cache)?;
    }

    let root = cache.join(format!("{package}_{file_version}"));
    if !root.join(COMPLETE_MARKER).is_file() {
        extract(tools, &deb, &root, &release)?;
    }
    let kernel = Kernel {
        package,
        version,
        release,
        root,
    };
    for path in [kernel.vmlinuz(), kernel.modules_dir(), kernel.config()] {
        if !path.exists() {
            return Err(KernelError::Layout {
                package: kernel.package.clone(),
                path,
            });
        }
    }
    check_config(&kernel.config())?;
    Ok(kernel)
}

/// Downloads into a scratch directory and renames the .deb into place, so an
/// interrupted download never looks like a cached one.
fn download(
    tools: &Toolbox,
    package: &str,
    version: &str,
    deb: &Path,
    cache: &Path,
) -> Result<(), KernelError> {
    let scratch = cache.join("download.tmp");
    if scratch.exists() {
        fs::remove_dir_all(&scratch).map_err(io("removing", &scratch))?;
    }
    fs::create_dir_all(&scratch).map_err(io("creating", &scratch))?;
    exec::run(
        tools
            .command(Tool::AptGet)
            .arg("download")
            .arg(format!("{package}={version}"))
            .current_dir(&scratch),
    )
    .map_err(|source| KernelError::Download {
        package: package.to_owned(),
        source,
    })?;
    let name = deb.file_name().expect("deb path has a file name");
    fs::rename(scratch.join(name), deb).map_err(io("moving the download to", deb))?;
    fs::remove_dir_all(&scratch).map_err(io("removing", &scratch))
}

fn extract(tools: &Toolbox, deb: &Path, root: &Path, release: &str) -> Result<(), KernelError> {
    if root.exists() {
        fs::remove_dir_all(root).map_err(io("removing the partial tree", root))?;
    }
    exec::run(tools.command(Tool::DpkgDeb).arg("-x").arg(deb).arg(root)).map_err(|source| {
        KernelError::Extract {
            deb: deb.to_owned(),
            source,
        }
    })?;
    exec::run(tools.command(Tool::Depmod).arg("-b").arg(root).arg(release)).map_err(|source| {
        KernelError::Depmod {
            dir: root.to_owned(),
            source,
        }
    })?;
    let marker = root.join(COMPLETE_MARKER);
    fs::write(&marker, format!("{}\n", deb.display())).map_err(io("writing", &marker))
}

/// The initramfs is zstd-compressed; refuse a kernel that cannot unpack it.
fn check_config(path: &Path) -> Result<(), KernelError> {
    let text = fs::read_to_string(path).map_err(io("reading", path))?;
    for option in ["CONFIG_BLK_DEV_INITRD", "CONFIG_RD_ZSTD"] {
        if !text.lines().any(|l| l == format!("{option}=y")) {
            return Err(KernelError::Config {
                path: path.to_owned(),
                option,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_picks_the_versioned_image() {
        let out = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
        assert_eq!(
            parse_depends(out).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
    }

    #[test]
    fn depends_skips_virtual_and_unrelated_lines() {
        let out = "linux-image-amd64\n  PreDepends: dpkg\n  Depends: <linux-image-virtual>\n  Recommends: firmware-linux\n |Depends: linux-image-6.1.0-56-amd64\n  Depends: linux-image-6.1.0-55-amd64\n";
        assert_eq!(
            parse_depends(out).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        assert_eq!(parse_depends("linux-image-amd64\n"), None);
        assert_eq!(parse_depends("x\n  Depends: initramfs-tools\n"), None);
    }

    #[test]
    fn version_is_read_from_show() {
        let out = "Package: linux-image-6.1.0-56-cloud-amd64\nSource: linux-signed-amd64 (6.1.192+2)\nVersion: 6.1.192-2\nArchitecture: amd64\n";
        assert_eq!(parse_version(out).as_deref(), Some("6.1.192-2"));
        assert_eq!(parse_version("Package: x\n"), None);
    }

    #[test]
    fn config_must_allow_zstd_initramfs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        fs::write(&path, "CONFIG_BLK_DEV_INITRD=y\nCONFIG_RD_ZSTD=y\n").unwrap();
        check_config(&path).unwrap();
        fs::write(
            &path,
            "CONFIG_BLK_DEV_INITRD=y\n# CONFIG_RD_ZSTD is not set\n",
        )
        .unwrap();
        assert!(matches!(
            check_config(&path),
            Err(KernelError::Config {
                option: "CONFIG_RD_ZSTD",
                ..
            })
        ));
    }
}
