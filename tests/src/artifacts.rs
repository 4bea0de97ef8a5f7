//! The image under test: `_out/` at the workspace root, or `SLATE_OUT`.

use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Artifacts {
    pub vmlinuz: PathBuf,
    pub initramfs: PathBuf,
    pub rootfs: PathBuf,
    pub iso: PathBuf,
    /// The kernel command line the image builder chose for direct boot.
    pub cmdline: String,
}

impl Artifacts {
    pub fn dir() -> PathBuf {
        let dir = std::env::var_os("SLATE_OUT")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("..")
                    .join("_out")
            });
        // Paths are printed for people to paste: no `tests/../`.
        dir.canonicalize().unwrap_or(dir)
    }

    /// Finds the image, or says how to build it.
    pub fn find() -> anyhow::Result<Self> {
        let dir = Self::dir();
        let a = Self {
            vmlinuz: dir.join("vmlinuz"),
            initramfs: dir.join("initramfs.zst"),
            rootfs: dir.join("rootfs.sqsh"),
            iso: dir.join("slate.iso"),
            cmdline: std::fs::read_to_string(dir.join("cmdline"))
                .unwrap_or_default()
                .trim()
                .to_owned(),
        };
        for p in [&a.vmlinuz, &a.initramfs] {
            anyhow::ensure!(
                p.exists(),
                "{} is missing: run `make image` first",
                p.display()
            );
        }
        Ok(a)
    }
}
