//! Release bundles made for tests and benchmarks from `_out/slate.bundle`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use slate_bundle::Part;

/// `bundle`'s kernel and bootloader with an initramfs that cannot boot
/// (junk: the kernel finds no init and panics, and `panic=-1` reboots),
/// as version "0.1.0-broken", written into `dir`.
pub fn broken(bundle: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let parts = dir.join("broken-parts");
    std::fs::create_dir_all(&parts)?;
    let mut files = Vec::new();
    let input = std::fs::File::open(bundle)
        .with_context(|| format!("{} (make image)", bundle.display()))?;
    let manifest = slate_bundle::read(input, |part, _, r| {
        let path = parts.join(part.file_name());
        let mut f = std::fs::File::create(&path)?;
        std::io::copy(r, &mut f)?;
        files.push((part, path));
        Ok(())
    })?;
    std::fs::write(
        parts.join(Part::Initramfs.file_name()),
        vec![0x5a; 64 * 1024],
    )?;
    let refs: Vec<(Part, &Path)> = files
        .iter()
        .filter(|(p, _)| *p != Part::Extensions)
        .map(|(p, f)| (*p, f.as_path()))
        .collect();
    let out = dir.join("broken.bundle");
    slate_bundle::write(&out, "0.1.0-broken", &manifest.cmdline, &refs, 1)?;
    Ok(out)
}
