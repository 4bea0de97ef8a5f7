//! Atomic placement of output files.
//!
//! An output is written to a hidden temporary file in its final directory,
//! synced, renamed over the final name, and the directory is synced: a build
//! that fails or is killed never leaves a half-written `rootfs.sqsh` that a
//! later `make run` would boot.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// Placing an output failed.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}")]
pub struct AtomicError {
    op: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

fn err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> AtomicError {
    let path = path.to_owned();
    move |source| AtomicError { op, path, source }
}

fn temp_name(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.tmp"))
}

/// Writes `bytes` to `dest` atomically.
pub fn write(dest: &Path, bytes: &[u8]) -> Result<(), AtomicError> {
    let tmp = temp_name(dest);
    fs::write(&tmp, bytes).map_err(err("writing", &tmp))?;
    commit(&tmp, dest)
}

/// Copies `src` to `dest` atomically.
pub fn copy(src: &Path, dest: &Path) -> Result<(), AtomicError> {
    let tmp = temp_name(dest);
    fs::copy(src, &tmp).map_err(err("copying to", &tmp))?;
    commit(&tmp, dest)
}

fn commit(tmp: &Path, dest: &Path) -> Result<(), AtomicError> {
    let result = (|| {
        File::open(tmp)
            .and_then(|f| f.sync_all())
            .map_err(err("syncing", tmp))?;
        fs::rename(tmp, dest).map_err(err("renaming into", dest))?;
        let dir = dest.parent().unwrap_or(Path::new("."));
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err("syncing", dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("cmdline");
        fs::write(&dest, "old").unwrap();
        write(&dest, b"new").unwrap();
        assert_eq!(fs::read_to_string(&dest).unwrap(), "new");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn failed_copy_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("vmlinuz");
        fs::write(&dest, "old").unwrap();
        assert!(copy(&dir.path().join("absent"), &dest).is_err());
        assert_eq!(fs::read_to_string(&dest).unwrap(), "old");
    }
}
