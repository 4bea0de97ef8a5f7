//! Atomic state writes: a reader sees either the old file or the new one,
//! never a torn one, also after a power cut.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Failure of [`write_atomic`], naming the step and the file.
#[derive(Debug, thiserror::Error)]
pub enum AtomicWriteError {
    #[error("{path} has no parent directory")]
    NoParent { path: PathBuf },
    #[error("creating temporary file {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing temporary file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("renaming {from} to {to}")]
    Rename {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("syncing directory {path}")]
    SyncDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Waits until `path` exists (another daemon published it), checking every
/// 10 ms: the files daemons hand over appear once per boot on tmpfs, so the
/// check costs nothing and keeps boot latency low. False after `limit`.
#[cfg(feature = "tokio")]
pub async fn wait_for_file(path: &Path, limit: std::time::Duration) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if path.exists() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}

/// Writes `data` to `path` with the given mode: temporary file in the same
/// directory, fsync, rename over `path`, fsync the directory. On failure the
/// temporary file is removed and `path` keeps its old content.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), AtomicWriteError> {
    write_atomic_with(path, mode, |file| file.write_all(data))
}

/// Copies `src` to `dest` the same way (for large outputs such as images).
pub fn copy_atomic(src: &Path, dest: &Path, mode: u32) -> Result<(), AtomicWriteError> {
    write_atomic_with(dest, mode, |file| {
        let mut from = File::open(src)?;
        io::copy(&mut from, file).map(drop)
    })
}

/// The one implementation behind [`write_atomic`] and [`copy_atomic`]:
/// `fill` writes the content into the temporary file.
fn write_atomic_with(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), AtomicWriteError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| AtomicWriteError::NoParent {
        path: path.to_owned(),
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);

    let result = fill_and_rename(&tmp, path, mode, fill);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| AtomicWriteError::SyncDir {
            path: dir.to_owned(),
            source,
        })
}

fn fill_and_rename(
    tmp: &Path,
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), AtomicWriteError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(tmp)
        .map_err(|source| AtomicWriteError::Create {
            path: tmp.to_owned(),
            source,
        })?;
    fill(&mut file)
        .and_then(|()| file.sync_all())
        .map_err(|source| AtomicWriteError::Write {
            path: tmp.to_owned(),
            source,
        })?;
    fs::rename(tmp, path).map_err(|source| AtomicWriteError::Rename {
        from: tmp.to_owned(),
        to: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_content_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.yaml");
        write_atomic(&path, b"old", 0o600).unwrap();
        write_atomic(&path, b"new", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.yaml")]);
    }

    #[test]
    fn copies_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.img");
        fs::write(&src, vec![7u8; 100_000]).unwrap();
        let dest = dir.path().join("out.img");
        fs::write(&dest, b"old").unwrap();
        copy_atomic(&src, &dest, 0o644).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), vec![7u8; 100_000]);
        assert!(copy_atomic(&dir.path().join("missing"), &dest, 0o644).is_err());
        assert_eq!(
            fs::read(&dest).unwrap().len(),
            100_000,
            "a failed copy keeps the old file"
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn failure_keeps_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        write_atomic(&path, b"old", 0o644).unwrap();
        // A directory in the way of the rename target makes the rename fail.
        let blocked = dir.path().join("blocked");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("x"), b"").unwrap();
        assert!(write_atomic(&blocked, b"new", 0o644).is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
