//! The image under test: `_out/` at the workspace root, or `SLATE_OUT`.

use std::path::PathBuf;

/// Binary `name` of the same build as the running test or tool: beside it
/// in `target/<triple>/release/` (tests run from its `deps/`). Binaries of
/// other packages are there only if built (`make build`).
pub fn built(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the running program's path");
    let dir = exe.parent().expect("a directory");
    let dir = if dir.ends_with("deps") {
        dir.parent().expect("a directory")
    } else {
        dir
    };
    dir.join(name)
}

#[derive(Debug, Clone)]
pub struct Artifacts {
    pub vmlinuz: PathBuf,
    pub initramfs: PathBuf,
    pub rootfs: PathBuf,
    pub iso: PathBuf,
    /// The release bundle (`slatectl upgrade --image`).
    pub bundle: PathBuf,
    /// The extension layer's initramfs segment, if the image has one.
    pub extensions: Option<PathBuf>,
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
            bundle: dir.join("slate.bundle"),
            extensions: Some(dir.join("extensions.cpio")).filter(|p| p.exists()),
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

    /// The extension layer's segment followed by the initramfs, as one
    /// file for QEMU's `-initrd` (a bootloader loads the two one after the
    /// other; the kernel unpacks both). Written to `_out/run/`.
    pub fn initramfs_with_extensions(&self) -> anyhow::Result<PathBuf> {
        use anyhow::Context as _;
        let ext = self
            .extensions
            .as_ref()
            .context("the image has no extension layer: run `make image` (it bundles containerd, runc and etcd)")?;
        let dir = Self::dir().join("run");
        std::fs::create_dir_all(&dir)?;
        let out = dir.join("initramfs+extensions.img");
        self.initramfs_with(ext, &out)?;
        Ok(out)
    }

    /// Writes the extension layer `layer` followed by the initramfs to
    /// `out` (a test's own layer).
    pub fn initramfs_with(
        &self,
        layer: &std::path::Path,
        out: &std::path::Path,
    ) -> anyhow::Result<()> {
        use anyhow::Context as _;
        // Uncompressed segment first: the kernel finds the next archive
        // after an uncompressed one, not after a zstd one.
        let mut bytes =
            std::fs::read(layer).with_context(|| format!("reading {}", layer.display()))?;
        bytes.extend(std::fs::read(&self.initramfs)?);
        slate_common::fs::write_atomic(out, &bytes, 0o644)
            .with_context(|| format!("writing {}", out.display()))
    }
}
