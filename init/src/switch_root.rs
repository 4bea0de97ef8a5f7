//! Switching from the initramfs to the mounted root, and exec'ing stage 2.
//!
//! `pivot_root(2)` does not work here: the initramfs is the kernel's
//! `rootfs`, which can be neither unmounted nor pivoted away. The classic
//! switch_root instead moves the new root's mount over `/` and chroots into
//! it; the old rootfs stays underneath, unreachable.

use std::convert::Infallible;
use std::ffi::CString;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use thiserror::Error;

use crate::mounts::{MountError, move_mount};

/// Mounts stage 1 made that stage 2 keeps. They are moved (MS_MOVE), not
/// mounted again: the same mount keeps its open files (our console fds on
/// /dev) and contents (/run), and once `/newroot` covers `/` they would
/// otherwise be hidden, still mounted, in the unreachable initramfs.
pub const MOVED_MOUNTS: &[&str] = &["/dev", "/proc", "/sys", "/run", "/tmp"];

#[derive(Debug, Error)]
pub enum SwitchRootError {
    #[error("new root {path} has no {init}")]
    NoInit { path: PathBuf, init: String },
    #[error("moving mounts into the new root")]
    Move(#[source] MountError),
    #[error("changing directory to {path}")]
    Chdir {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("chroot into {path}")]
    Chroot {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("exec {path}")]
    Exec {
        path: String,
        #[source]
        source: Errno,
    },
}

/// Move `moved` under `new_root`, make `new_root` the root and chdir to it.
///
/// Checks first that `new_root` has `init`, so a broken image fails while we
/// can still report it from a working initramfs.
pub fn switch_root(new_root: &Path, moved: &[&str], init: &str) -> Result<(), SwitchRootError> {
    if !new_root.join(init.trim_start_matches('/')).exists() {
        return Err(SwitchRootError::NoInit {
            path: new_root.to_path_buf(),
            init: init.to_string(),
        });
    }
    for m in moved {
        let from = Path::new(m);
        let to = new_root.join(m.trim_start_matches('/'));
        move_mount(from, &to).map_err(SwitchRootError::Move)?;
    }
    // The sequence of util-linux switch_root / busybox switch_root:
    // chdir into the new root, move it over "/", then chroot(".") so that
    // "/" for this process is the moved mount, and chdir("/") inside it.
    nix::unistd::chdir(new_root).map_err(|source| SwitchRootError::Chdir {
        path: new_root.to_path_buf(),
        source,
    })?;
    move_mount(Path::new("."), Path::new("/")).map_err(SwitchRootError::Move)?;
    nix::unistd::chroot(".").map_err(|source| SwitchRootError::Chroot {
        path: new_root.to_path_buf(),
        source,
    })?;
    nix::unistd::chdir("/").map_err(|source| SwitchRootError::Chdir {
        path: "/".into(),
        source,
    })?;
    Ok(())
}

/// Replace this process with `path` (argv is just the path; the kernel's
/// environment is kept). Returns only on failure.
pub fn exec(path: &str) -> SwitchRootError {
    let c = match CString::new(path) {
        Ok(c) => c,
        Err(_) => {
            return SwitchRootError::Exec {
                path: path.to_string(),
                source: Errno::EINVAL,
            };
        }
    };
    let result: Result<Infallible, Errno> = nix::unistd::execv(&c, &[&c]);
    match result {
        Ok(never) => match never {},
        Err(source) => SwitchRootError::Exec {
            path: path.to_string(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_root_without_init_before_touching_mounts() {
        let dir = tempfile::tempdir().unwrap();
        let err = switch_root(dir.path(), MOVED_MOUNTS, "/sbin/init").unwrap_err();
        assert!(matches!(err, SwitchRootError::NoInit { .. }), "{err}");
    }

    #[test]
    fn exec_of_a_missing_file_returns_the_error() {
        let err = exec("/nonexistent/sbin/init");
        assert!(
            matches!(
                err,
                SwitchRootError::Exec {
                    source: Errno::ENOENT,
                    ..
                }
            ),
            "{err}"
        );
    }
}
