//! Debian programs the root image carries besides our own static binaries,
//! with the shared libraries they load.
//!
//! Only what Slate cannot do itself goes here: `mke2fs` formats the STATE
//! (and later EPHEMERAL) volumes with ext4, whose journal is what makes
//! "temp file, fsync, rename" survive a power cut; no maintained Rust crate
//! formats ext4. The program and its libraries come from the build host's
//! Debian packages (`e2fsprogs`), found with `ldd`, and keep their paths so
//! the dynamic loader finds them without an `ld.so.cache`.

use std::path::{Path, PathBuf};

use crate::exec::{self, ExecError};
use crate::tools::{Tool, Toolbox};

/// Programs and the files they read, with their place in the image.
pub const PROGRAMS: &[(Tool, &str)] = &[(Tool::Mke2fs, "usr/sbin/mke2fs")];
pub const DATA: &[(&str, &str)] = &[("/etc/mke2fs.conf", "etc/mke2fs.conf")];

#[derive(Debug, thiserror::Error)]
pub enum HostBinError {
    #[error("listing the libraries of {program}")]
    Ldd {
        program: PathBuf,
        #[source]
        source: ExecError,
    },
    #[error("ldd names no library path in {line:?} for {program}")]
    Parse { program: PathBuf, line: String },
}

/// Every file `program` needs at run time: itself excluded, its libraries
/// and the dynamic loader, as absolute host paths.
pub fn libraries(tools: &Toolbox, program: &Path) -> Result<Vec<PathBuf>, HostBinError> {
    let out = exec::stdout(tools.command(Tool::Ldd).arg(program)).map_err(|source| {
        HostBinError::Ldd {
            program: program.to_owned(),
            source,
        }
    })?;
    parse_ldd(&out).map_err(|line| HostBinError::Parse {
        program: program.to_owned(),
        line,
    })
}

/// `libx.so.1 => /lib/…/libx.so.1 (0x…)` and `/lib64/ld-linux….so.2 (0x…)`
/// give a path; the vDSO has none and needs none.
fn parse_ldd(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with("linux-vdso") {
            continue;
        }
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        match path {
            Some(p) if p.starts_with('/') => out.push(PathBuf::from(p)),
            _ => return Err(line.to_owned()),
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_libraries_and_the_loader() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibext2fs.so.2 => /lib/x86_64-linux-gnu/libext2fs.so.2 (0x00007f51)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f52)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f53)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib/x86_64-linux-gnu/libext2fs.so.2"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(parse_ldd("\tlibgone.so.1 => not found\n").is_err());
    }
}
