//! The read-only root image, `rootfs.sqsh`.
//!
//! A staging tree is assembled under `<out>/work/rootfs/` with explicit
//! modes (so the host umask cannot leak in), the allow-listed kernel modules
//! and a regenerated module index, then packed by `mksquashfs` with fixed
//! owners and timestamps so the image is byte-for-byte reproducible.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use slate_common::constants::{LATE_MODULE_LIST, LINK_MODULE_LIST};

use crate::exec::{self, ExecError};
use crate::kernel::Kernel;
use crate::tools::{Tool, Toolbox};

/// Binaries from `--bin-dir` and where they go in the root image.
pub const BINARIES: &[(&str, &str)] = &[("init", "sbin/init"), ("slated", "usr/bin/slated")];

/// The daemons, each a name of the multi-call `slated` (see slated/).
const DAEMON_LINKS: &[&str] = &[
    "usr/bin/machined",
    "usr/bin/apid",
    "usr/bin/networkd",
    "usr/bin/slate-discovery",
];

/// Empty mount points and writable-overlay targets.
const DIRS: &[&str] = &[
    "dev",
    "proc",
    "sys",
    "run",
    "tmp",
    "var",
    "etc",
    "mnt",
    "sbin",
    "usr",
    "usr/bin",
    "usr/sbin",
    // Where init mounts the extension layer.
    "usr/local",
];

/// Module index files copied from the package: depmod needs `modules.builtin`
/// (so loading a built-in name is not an error) and `modules.order`.
const INDEX_INPUTS: &[&str] = &["modules.builtin", "modules.builtin.modinfo"];

/// A failed root-image step.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("regenerating the module index in {dir}")]
    Depmod {
        dir: PathBuf,
        #[source]
        source: ExecError,
    },
    #[error(transparent)]
    HostBin(#[from] crate::hostbin::HostBinError),
    #[error("packing {path}")]
    Mksquashfs {
        path: PathBuf,
        #[source]
        source: ExecError,
    },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RootfsError {
    let path = path.to_owned();
    move |source| RootfsError::Io { op, path, source }
}

/// What goes into the image besides the fixed layout.
pub struct Inputs<'a> {
    pub bin_dir: &'a Path,
    pub kernel: &'a Kernel,
    /// Module paths relative to the module directory (`kernel/...ko`).
    pub modules: &'a [String],
    /// Modules init loads in stage 2, in load order (also in `modules`).
    pub late_modules: &'a [String],
    /// Link drivers init loads once the node has an address (also in `modules`).
    pub link_modules: &'a [String],
    pub version: &'a str,
    pub epoch: u64,
}

/// Builds `<work>/rootfs.sqsh` from a fresh staging tree and returns its path.
pub fn build(tools: &Toolbox, work: &Path, inputs: &Inputs) -> Result<PathBuf, RootfsError> {
    let staging = work.join("rootfs");
    for dir in DIRS {
        make_dir(&staging.join(dir))?;
    }
    for (name, dest) in BINARIES {
        copy(&inputs.bin_dir.join(name), &staging.join(dest), 0o755)?;
    }
    for link in DAEMON_LINKS {
        let path = staging.join(link);
        symlink("slated", &path).map_err(io("creating the symlink", &path))?;
    }
    for (tool, dest) in crate::hostbin::PROGRAMS {
        let program = tools.path(*tool);
        copy(program, &staging.join(dest), 0o755)?;
        for lib in crate::hostbin::libraries(tools, program)? {
            let inside = staging.join(lib.strip_prefix("/").unwrap_or(&lib));
            copy(&lib, &inside, 0o755)?;
        }
    }
    for (src, dest) in crate::hostbin::DATA {
        copy(Path::new(src), &staging.join(dest), 0o644)?;
    }
    write(&staging.join("etc/os-release"), &os_release(inputs.version))?;
    write(&staging.join("etc/hosts"), HOSTS)?;
    // networkd owns name resolution and writes the file on the tmpfs /run.
    let resolv = staging.join("etc/resolv.conf");
    symlink("/run/slate/resolv.conf", &resolv).map_err(io("creating the symlink", &resolv))?;

    let release = &inputs.kernel.release;
    let src = inputs.kernel.modules_dir();
    let dest = staging.join("lib/modules").join(release);
    make_dir(&dest)?;
    for module in inputs.modules {
        copy(&src.join(module), &dest.join(module), 0o644)?;
    }
    for name in INDEX_INPUTS {
        copy(&src.join(name), &dest.join(name), 0o644)?;
    }
    // Keep the package's order for the modules we ship: depmod uses it to
    // order modules.dep, so it must be stable.
    let order = fs::read_to_string(src.join("modules.order")).map_err(io("reading", &src))?;
    let shipped: std::collections::BTreeSet<&str> =
        inputs.modules.iter().map(String::as_str).collect();
    let order: String = order
        .lines()
        .filter(|l| shipped.contains(l))
        .map(|l| format!("{l}\n"))
        .collect();
    write(&dest.join("modules.order"), &order)?;
    for (list, modules) in [
        (LATE_MODULE_LIST, inputs.late_modules),
        (LINK_MODULE_LIST, inputs.link_modules),
    ] {
        let text: String = modules
            .iter()
            .map(|m| format!("/lib/modules/{release}/{m}\n"))
            .collect();
        write(&staging.join(list.trim_start_matches('/')), &text)?;
    }
    exec::run(
        tools
            .command(Tool::Depmod)
            .arg("-b")
            .arg(&staging)
            .arg(release),
    )
    .map_err(|source| RootfsError::Depmod {
        dir: dest.clone(),
        source,
    })?;
    fix_modes(&staging)?;

    let out = work.join("rootfs.sqsh");
    // zstd 19 and 1 MiB blocks instead of 128 KiB: ~10% smaller with
    // static binaries, and the image sits in RAM, so the extra
    // decompression per cache miss costs no I/O.
    squash(tools, &staging, &out, 19, inputs.epoch).map_err(|source| RootfsError::Mksquashfs {
        path: out.clone(),
        source,
    })?;
    Ok(out)
}

/// `staging` as a read-only squashfs at `out`: zstd at `level`, 1 MiB
/// blocks, every file root's, times set to `epoch` (reproducible).
pub fn squash(
    tools: &Toolbox,
    staging: &Path,
    out: &Path,
    level: u32,
    epoch: u64,
) -> Result<(), ExecError> {
    let epoch = epoch.to_string();
    exec::run(
        tools
            .command(Tool::Mksquashfs)
            // mksquashfs 4.5 refuses SOURCE_DATE_EPOCH together with the
            // explicit -all-time/-mkfs-time below, which it must not
            // override anyway: the flags carry the same value.
            .env_remove("SOURCE_DATE_EPOCH")
            .arg(staging)
            .arg(out)
            .args(["-comp", "zstd", "-Xcompression-level", &level.to_string()])
            .args(["-b", "1M"])
            .args(["-all-root", "-noappend", "-no-xattrs"])
            .args(["-all-time", &epoch, "-mkfs-time", &epoch])
            .args(["-quiet", "-no-progress"]),
    )
    .map(drop)
}

const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

fn os_release(version: &str) -> String {
    format!("NAME=\"Slate\"\nID=slate\nVERSION_ID={version}\nPRETTY_NAME=\"Slate {version}\"\n")
}

fn make_dir(path: &Path) -> Result<(), RootfsError> {
    fs::create_dir_all(path).map_err(io("creating", path))
}

fn write(path: &Path, text: &str) -> Result<(), RootfsError> {
    fs::write(path, text).map_err(io("writing", path))
}

fn copy(src: &Path, dest: &Path, mode: u32) -> Result<(), RootfsError> {
    if let Some(parent) = dest.parent() {
        make_dir(parent)?;
    }
    fs::copy(src, dest).map_err(io("copying", src))?;
    fs::set_permissions(dest, fs::Permissions::from_mode(mode)).map_err(io("chmod", dest))
}

/// Directories 0755, files 0644 unless executable (0755): mksquashfs records
/// modes as found, and the host umask must not change the image.
fn fix_modes(dir: &Path) -> Result<(), RootfsError> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(io("chmod", dir))?;
    for entry in fs::read_dir(dir).map_err(io("listing", dir))? {
        let path = entry.map_err(io("listing", dir))?.path();
        let meta = fs::symlink_metadata(&path).map_err(io("inspecting", &path))?;
        if meta.is_dir() {
            fix_modes(&path)?;
        } else if meta.is_file() {
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(io("chmod", &path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_names_slate_and_version() {
        let text = os_release("0.1.0");
        assert!(text.contains("\nID=slate\n"));
        assert!(text.contains("VERSION_ID=0.1.0\n"));
        assert!(text.starts_with("NAME=\"Slate\"\n"));
    }

    #[test]
    fn modes_are_normalised() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a/f");
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(&file, "x").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        fix_modes(dir.path()).unwrap();
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o7777,
            0o644
        );
    }
}
