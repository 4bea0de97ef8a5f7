//! Up-front checks for the host tools and the input binaries.
//!
//! Every tool is looked up before any work starts, so a missing package is
//! reported as one line naming the Debian package, not as a failure twenty
//! seconds into the build.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A host tool the build runs, or a data directory it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tool {
    AptGet,
    AptCache,
    DpkgDeb,
    Depmod,
    Mksquashfs,
    Zstd,
    Ldd,
    Mke2fs,
    GrubMkrescue,
    Xorriso,
    Mformat,
    Mmd,
    Mcopy,
    GrubMkimage,
    GrubPc,
    GrubEfi,
}

impl Tool {
    /// Tools every build needs.
    pub const CORE: &[Tool] = &[
        Tool::AptGet,
        Tool::AptCache,
        Tool::DpkgDeb,
        Tool::Depmod,
        Tool::Mksquashfs,
        Tool::Zstd,
        Tool::Ldd,
        Tool::Mke2fs,
    ];
    /// Extra tools for the ISO.
    pub const ISO: &[Tool] = &[
        Tool::GrubMkrescue,
        Tool::Xorriso,
        Tool::Mformat,
        Tool::Mmd,
        Tool::Mcopy,
        Tool::GrubMkimage,
        Tool::GrubPc,
        Tool::GrubEfi,
    ];

    /// The executable name, or the directory for data-only packages.
    pub fn name(self) -> &'static str {
        match self {
            Tool::AptGet => "apt-get",
            Tool::AptCache => "apt-cache",
            Tool::DpkgDeb => "dpkg-deb",
            Tool::Depmod => "depmod",
            Tool::Mksquashfs => "mksquashfs",
            Tool::Zstd => "zstd",
            Tool::Ldd => "ldd",
            Tool::Mke2fs => "mke2fs",
            Tool::GrubMkrescue => "grub-mkrescue",
            Tool::Xorriso => "xorriso",
            Tool::Mformat => "mformat",
            Tool::Mmd => "mmd",
            Tool::Mcopy => "mcopy",
            Tool::GrubMkimage => "grub-mkimage",
            Tool::GrubPc => "/usr/lib/grub/i386-pc",
            Tool::GrubEfi => "/usr/lib/grub/x86_64-efi",
        }
    }

    /// The Debian package that provides it.
    pub fn package(self) -> &'static str {
        match self {
            Tool::AptGet | Tool::AptCache => "apt",
            Tool::DpkgDeb => "dpkg",
            Tool::Depmod => "kmod",
            Tool::Mksquashfs => "squashfs-tools",
            Tool::Zstd => "zstd",
            Tool::Ldd => "libc-bin",
            Tool::Mke2fs => "e2fsprogs",
            Tool::GrubMkrescue => "grub-common",
            Tool::Xorriso => "xorriso",
            Tool::Mformat | Tool::Mmd | Tool::Mcopy => "mtools",
            Tool::GrubMkimage => "grub-common",
            Tool::GrubPc => "grub-pc-bin",
            Tool::GrubEfi => "grub-efi-amd64-bin",
        }
    }

    fn is_directory(self) -> bool {
        matches!(self, Tool::GrubPc | Tool::GrubEfi)
    }
}

/// Why the host or the inputs are not ready for a build.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{}", missing_message(.0))]
    Missing(Vec<Tool>),
    #[error("{name} not found in {dir}: run `make build` first (or pass --bin-dir)")]
    MissingBinary { name: String, dir: PathBuf },
    #[error(
        "{name} in {dir} is dynamically linked: the image has no libc, build it static (`make build`)"
    )]
    DynamicBinary { name: String, dir: PathBuf },
    #[error("reading {path}")]
    ReadBinary {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn missing_message(tools: &[Tool]) -> String {
    let names: Vec<_> = tools.iter().map(|t| t.name()).collect();
    let mut packages: Vec<_> = tools.iter().map(|t| t.package()).collect();
    packages.dedup();
    let plural = if packages.len() == 1 { "" } else { "s" };
    format!(
        "{} not found: install the Debian package{plural} {} (or run make deps)",
        names.join(", "),
        packages.join(" ")
    )
}

/// Resolved absolute paths of the tools this build uses.
#[derive(Debug, Clone)]
pub struct Toolbox {
    paths: BTreeMap<Tool, PathBuf>,
}

impl Toolbox {
    /// Looks every tool in `needed` up in `search_path` (plus the sbin
    /// directories, where `depmod` lives but which a user's PATH often lacks).
    pub fn find(needed: &[Tool], search_path: Option<OsString>) -> Result<Self, ToolError> {
        let mut dirs: Vec<PathBuf> = search_path
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        for extra in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
            if !dirs.iter().any(|d| d == Path::new(extra)) {
                dirs.push(PathBuf::from(extra));
            }
        }
        let mut paths = BTreeMap::new();
        let mut missing = Vec::new();
        for &tool in needed {
            let found = if tool.is_directory() {
                Some(PathBuf::from(tool.name())).filter(|p| p.is_dir())
            } else {
                dirs.iter()
                    .map(|d| d.join(tool.name()))
                    .find(|p| is_executable(p))
            };
            match found {
                Some(path) => {
                    paths.insert(tool, path);
                }
                None => missing.push(tool),
            }
        }
        if missing.is_empty() {
            Ok(Self { paths })
        } else {
            Err(ToolError::Missing(missing))
        }
    }

    /// The path of a tool checked by [`Toolbox::find`].
    ///
    /// # Panics
    /// If `tool` was not in the list given to `find` (a programming error).
    pub fn path(&self, tool: Tool) -> &Path {
        self.paths
            .get(&tool)
            .unwrap_or_else(|| panic!("tool {} was not checked up front", tool.name()))
    }

    /// A `Command` for `tool`.
    pub fn command(&self, tool: Tool) -> std::process::Command {
        std::process::Command::new(self.path(tool))
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Checks that each of `names` exists in `dir` and is a static executable.
pub fn check_binaries(dir: &Path, names: &[&str]) -> Result<(), ToolError> {
    for name in names {
        let path = dir.join(name);
        if !path.is_file() {
            return Err(ToolError::MissingBinary {
                name: (*name).to_owned(),
                dir: dir.to_owned(),
            });
        }
        let dynamic = has_interpreter(&path).map_err(|source| ToolError::ReadBinary {
            path: path.clone(),
            source,
        })?;
        if dynamic {
            return Err(ToolError::DynamicBinary {
                name: (*name).to_owned(),
                dir: dir.to_owned(),
            });
        }
    }
    Ok(())
}

/// True when `path` is a 64-bit little-endian ELF with a PT_INTERP header,
/// i.e. it needs a dynamic loader the image does not have. Non-ELF files
/// (scripts) are reported as not dynamic: the kernel will refuse them with
/// its own error, and tests may use them.
fn has_interpreter(path: &Path) -> std::io::Result<bool> {
    const PT_INTERP: u32 = 3;
    let mut header = [0u8; 64];
    let mut file = File::open(path)?;
    if file.read(&mut header)? < 64 || &header[..4] != b"\x7fELF" || header[4] != 2 {
        return Ok(false);
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let phoff = u64::from_le_bytes(header[32..40].try_into().expect("8 bytes"));
    let phentsize = u64::from(u16_at(&header, 54));
    let phnum = u64::from(u16_at(&header, 56));
    let mut table = vec![0u8; (phentsize * phnum) as usize];
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(phoff))?;
    file.read_exact(&mut table)?;
    Ok(table
        .chunks(phentsize.max(4) as usize)
        .any(|ph| u32::from_le_bytes([ph[0], ph[1], ph[2], ph[3]]) == PT_INTERP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_is_one_line_naming_the_package() {
        let err = ToolError::Missing(vec![Tool::Mksquashfs]);
        assert_eq!(
            err.to_string(),
            "mksquashfs not found: install the Debian package squashfs-tools (or run make deps)"
        );
    }

    #[test]
    fn several_missing_tools_share_one_line() {
        let err = ToolError::Missing(vec![Tool::AptGet, Tool::AptCache, Tool::GrubEfi]);
        let msg = err.to_string();
        assert_eq!(
            msg,
            "apt-get, apt-cache, /usr/lib/grub/x86_64-efi not found: install the Debian packages apt grub-efi-amd64-bin (or run make deps)"
        );
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn find_reports_tools_absent_from_path() {
        let empty = tempfile::tempdir().unwrap();
        // Only Zstd is looked up; the fallback dirs may hold it on a dev box,
        // so check with a name that cannot exist instead via the error path.
        match Toolbox::find(&[Tool::GrubPc], Some(empty.path().into())) {
            Ok(tb) => assert!(tb.path(Tool::GrubPc).is_dir()),
            Err(ToolError::Missing(tools)) => assert_eq!(tools, vec![Tool::GrubPc]),
            Err(other) => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn dynamic_binaries_are_rejected_and_scripts_pass() {
        let dir = tempfile::tempdir().unwrap();
        // /bin/ls on Debian is dynamically linked.
        std::fs::copy("/bin/ls", dir.path().join("ls")).unwrap();
        std::fs::write(dir.path().join("script"), "#!/bin/sh\n").unwrap();
        assert!(matches!(
            check_binaries(dir.path(), &["ls"]),
            Err(ToolError::DynamicBinary { .. })
        ));
        assert!(check_binaries(dir.path(), &["script"]).is_ok());
        assert!(matches!(
            check_binaries(dir.path(), &["absent"]),
            Err(ToolError::MissingBinary { .. })
        ));
    }
}
