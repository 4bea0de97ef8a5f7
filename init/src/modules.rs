//! Stage 1 kernel modules: the load list and `finit_module`.
//!
//! The image builder resolves dependencies and writes the list in load
//! order, so init needs no modules.dep parser. A module that fails is logged
//! and boot goes on (it may not be needed on this machine); failures get a
//! second pass in case an earlier failure was a dependency that a later
//! line loaded.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::kmod::{ModuleInitFlags, finit_module};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModuleError {
    #[error("reading module list {path}")]
    ReadList {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("opening module {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("loading module {path}")]
    Load {
        path: PathBuf,
        #[source]
        source: Errno,
    },
}

/// The load list: absolute paths in order, and the lines that were not.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LoadList {
    pub modules: Vec<PathBuf>,
    /// (line number, text) of lines that are not absolute paths.
    pub invalid: Vec<(usize, String)>,
}

/// One path per line; blank lines and `#` comments are ignored.
pub fn parse_load_list(text: &str) -> LoadList {
    let mut out = LoadList::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('/') && !line.contains(char::is_whitespace) {
            out.modules.push(PathBuf::from(line));
        } else {
            out.invalid.push((n + 1, line.to_string()));
        }
    }
    out
}

#[derive(Debug, PartialEq, Eq)]
pub enum Loaded {
    Loaded,
    /// EEXIST: built in or loaded before. Not an error.
    AlreadyLoaded,
}

pub fn load_module(path: &Path) -> Result<Loaded, ModuleError> {
    let file = File::open(path).map_err(|source| ModuleError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    const NO_PARAMS: &CStr = c"";
    match finit_module(&file, NO_PARAMS, ModuleInitFlags::empty()) {
        Ok(()) => Ok(Loaded::Loaded),
        Err(Errno::EEXIST) => Ok(Loaded::AlreadyLoaded),
        Err(source) => Err(ModuleError::Load {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Counts for the console line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub loaded: usize,
    pub already: usize,
    pub failed: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} loaded, {} already present, {} failed",
            self.loaded, self.already, self.failed
        )
    }
}

/// Passes over the failures after the first pass.
const RETRY_PASSES: usize = 1;

/// Load every module in the list at `list`. Only an unreadable list is an
/// error; each module failure is logged.
pub fn load_list(list: &Path) -> Result<Summary, ModuleError> {
    let text = std::fs::read_to_string(list).map_err(|source| ModuleError::ReadList {
        path: list.to_path_buf(),
        source,
    })?;
    let parsed = parse_load_list(&text);
    for (n, line) in &parsed.invalid {
        crate::log!(
            "{}:{n}: not an absolute path, skipped: {line}",
            list.display()
        );
    }
    Ok(load_all(&parsed.modules, load_module))
}

/// The pass-and-retry policy over any loader (tests pass a fake).
pub fn load_all(
    modules: &[PathBuf],
    mut load: impl FnMut(&Path) -> Result<Loaded, ModuleError>,
) -> Summary {
    let mut summary = Summary::default();
    let mut pending: Vec<&PathBuf> = modules.iter().collect();
    for pass in 0..=RETRY_PASSES {
        let last = pass == RETRY_PASSES;
        let mut failed = Vec::new();
        for path in pending {
            match load(path) {
                Ok(Loaded::Loaded) => {
                    crate::debug!("loaded {}", path.display());
                    summary.loaded += 1;
                }
                Ok(Loaded::AlreadyLoaded) => summary.already += 1,
                // A missing file will not appear on a retry.
                Err(e @ ModuleError::Open { .. }) => {
                    crate::log!("{}", crate::console::chain(&e));
                    summary.failed += 1;
                }
                Err(e) if last => {
                    crate::log!("{}", crate::console::chain(&e));
                    summary.failed += 1;
                }
                Err(_) => failed.push(path),
            }
        }
        pending = failed;
        if pending.is_empty() {
            break;
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn parses_the_load_list() {
        let text = "\
# generated by slate-image
/lib/modules/6.1.0/kernel/drivers/virtio/virtio_pci.ko

  /lib/modules/6.1.0/kernel/drivers/block/loop.ko  
relative/squashfs.ko
/with space.ko
/lib/modules/6.1.0/kernel/fs/squashfs/squashfs.ko";
        let list = parse_load_list(text);
        assert_eq!(
            list.modules,
            vec![
                PathBuf::from("/lib/modules/6.1.0/kernel/drivers/virtio/virtio_pci.ko"),
                "/lib/modules/6.1.0/kernel/drivers/block/loop.ko".into(),
                "/lib/modules/6.1.0/kernel/fs/squashfs/squashfs.ko".into(),
            ]
        );
        assert_eq!(
            list.invalid,
            vec![
                (5, "relative/squashfs.ko".into()),
                (6, "/with space.ko".into())
            ]
        );
    }

    #[test]
    fn empty_list() {
        assert_eq!(parse_load_list(""), LoadList::default());
        assert_eq!(parse_load_list("\n# only a comment\n"), LoadList::default());
    }

    fn load_err(p: &Path, errno: Errno) -> ModuleError {
        ModuleError::Load {
            path: p.to_path_buf(),
            source: errno,
        }
    }

    #[test]
    fn failures_get_a_second_pass_and_boot_goes_on() {
        let mods: Vec<PathBuf> = ["/a.ko", "/b.ko", "/c.ko", "/d.ko", "/missing.ko"]
            .iter()
            .map(PathBuf::from)
            .collect();
        let mut calls: HashMap<PathBuf, usize> = HashMap::new();
        let summary = load_all(&mods, |p| {
            let n = calls.entry(p.to_path_buf()).or_default();
            *n += 1;
            match p.to_str().unwrap() {
                // Fails once (a dependency loaded later), then works.
                "/a.ko" if *n == 1 => Err(load_err(p, Errno::ENOENT)),
                "/a.ko" => Ok(Loaded::Loaded),
                "/b.ko" => Ok(Loaded::AlreadyLoaded),
                "/c.ko" => Ok(Loaded::Loaded),
                "/d.ko" => Err(load_err(p, Errno::EINVAL)),
                _ => Err(ModuleError::Open {
                    path: p.to_path_buf(),
                    source: io::ErrorKind::NotFound.into(),
                }),
            }
        });
        assert_eq!(
            summary,
            Summary {
                loaded: 2,
                already: 1,
                failed: 2
            }
        );
        assert_eq!(calls[Path::new("/a.ko")], 2);
        assert_eq!(calls[Path::new("/d.ko")], 2);
        assert_eq!(
            calls[Path::new("/missing.ko")],
            1,
            "a missing file is not retried"
        );
        assert_eq!(calls[Path::new("/c.ko")], 1);
    }

    #[test]
    fn unreadable_list_is_an_error() {
        let err = load_list(Path::new("/nonexistent/slate-stage1.list")).unwrap_err();
        assert!(matches!(err, ModuleError::ReadList { .. }));
    }
}
