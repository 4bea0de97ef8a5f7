//! `initramfs.zst`: init, the stage-1 modules with their load list, two
//! device nodes and `rootfs.sqsh`, as a newc cpio compressed with zstd.
//!
//! Device nodes are cpio entries, never `mknod`-ed on the host, so the build
//! needs no root. `/dev/console` must exist before init runs: the kernel
//! opens it for init's stdin/out/err, and DEVTMPFS_MOUNT is off in Debian's
//! config, so without the node init would start with no console.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use crate::cpio::{Archive, Body, CpioError};
use crate::exec::{self, ExecError};
use crate::tools::{Tool, Toolbox};

/// Where init finds the modules to load, one absolute path per line, each
/// after its dependencies.
pub const LOAD_LIST: &str = slate_common::constants::STAGE1_MODULE_LIST;

/// Where the extension layer's segment puts its squashfs
/// ([`crate::extensions`]); init looks for it there.
pub const EXTENSIONS_PATH: &str = "extensions.sqsh";

/// Mount points and scratch directories init expects.
const DIRS: &[&str] = &["dev", "proc", "sys", "run", "tmp", "newroot"];

/// A failed initramfs step.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("creating {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the cpio archive {path}")]
    Cpio {
        path: PathBuf,
        #[source]
        source: CpioError,
    },
    #[error("compressing {path}")]
    Compress {
        path: PathBuf,
        #[source]
        source: ExecError,
    },
}

/// What goes into the initramfs.
pub struct Inputs<'a> {
    pub init: &'a Path,
    pub rootfs: &'a Path,
    pub release: &'a str,
    pub modules_dir: &'a Path,
    /// Stage-1 module paths relative to `modules_dir`, in load order.
    pub modules: &'a [String],
}

/// The archive layout, separate from writing so tests can inspect it.
pub fn archive(inputs: &Inputs) -> Archive {
    let mut a = Archive::new();
    for dir in DIRS {
        a.dir(dir);
    }
    let kdir = format!("lib/modules/{}", inputs.release);
    a.dir(&kdir);
    a.add("init", 0o755, Body::File(inputs.init.to_owned()));
    a.add("dev/console", 0o600, Body::CharDev { major: 5, minor: 1 });
    a.add("dev/null", 0o666, Body::CharDev { major: 1, minor: 3 });
    a.add("rootfs.sqsh", 0o444, Body::File(inputs.rootfs.to_owned()));
    let mut list = String::new();
    for module in inputs.modules {
        let path = format!("{kdir}/{module}");
        a.add(&path, 0o644, Body::File(inputs.modules_dir.join(module)));
        list.push_str(&format!("/{path}\n"));
    }
    a.add(
        LOAD_LIST.trim_start_matches('/'),
        0o644,
        Body::Data(list.into_bytes()),
    );
    a
}

/// Writes `<work>/initramfs.cpio`, compresses it to `<work>/initramfs.zst`
/// and returns that path.
pub fn build(
    tools: &Toolbox,
    work: &Path,
    inputs: &Inputs,
    epoch: u32,
) -> Result<PathBuf, InitramfsError> {
    let cpio = work.join("initramfs.cpio");
    let file = File::create(&cpio).map_err(|source| InitramfsError::Create {
        path: cpio.clone(),
        source,
    })?;
    let cpio_err = |source| InitramfsError::Cpio {
        path: cpio.clone(),
        source,
    };
    let out = archive(inputs)
        .write(BufWriter::new(file), epoch)
        .map_err(cpio_err)?;
    out.into_inner()
        .map_err(|e| cpio_err(CpioError::Write(e.into_error())))?;

    let zst = work.join("initramfs.zst");
    // One thread, no workers: the output then depends only on the input, the
    // level and the zstd version, never on the host's core count.
    exec::run(
        tools
            .command(Tool::Zstd)
            .args(["-19", "--single-thread", "-q", "-f", "--no-progress"])
            .arg(&cpio)
            .arg("-o")
            .arg(&zst),
    )
    .map_err(|source| InitramfsError::Compress {
        path: zst.clone(),
        source,
    })?;
    Ok(zst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_has_nodes_modules_and_load_list() {
        let dir = tempfile::tempdir().unwrap();
        let kdir = dir.path().join("mods");
        std::fs::create_dir_all(kdir.join("kernel/fs/fat")).unwrap();
        for m in ["fat", "vfat"] {
            std::fs::write(kdir.join(format!("kernel/fs/fat/{m}.ko")), m).unwrap();
        }
        let init = dir.path().join("init");
        let rootfs = dir.path().join("rootfs.sqsh");
        std::fs::write(&init, "i").unwrap();
        std::fs::write(&rootfs, "r").unwrap();
        let modules = vec![
            "kernel/fs/fat/fat.ko".to_owned(),
            "kernel/fs/fat/vfat.ko".to_owned(),
        ];
        let inputs = Inputs {
            init: &init,
            rootfs: &rootfs,
            release: "6.1.0-test",
            modules_dir: &kdir,
            modules: &modules,
        };
        let bytes = archive(&inputs).write(Vec::new(), 0).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for name in [
            "newroot\0",
            "dev/console\0",
            "lib/modules/6.1.0-test/kernel/fs/fat/vfat.ko\0",
            "rootfs.sqsh\0",
            "TRAILER!!!\0",
        ] {
            assert!(text.contains(name), "missing {name}");
        }
        assert!(text.contains(
            "/lib/modules/6.1.0-test/kernel/fs/fat/fat.ko\n/lib/modules/6.1.0-test/kernel/fs/fat/vfat.ko\n"
        ));
    }
}
