//! A container image archive made in a test, with no registry: busybox
//! (Debian's busybox-static) as a one-layer OCI image layout, tarred as
//! `docker save`/`skopeo` would. The layout is the OCI image spec's:
//! `oci-layout`, `index.json` (naming the image in the
//! `io.containerd.image.name` annotation, which `ctr images import`
//! reads), and content-addressed `blobs/sha256/…` for the layer, the
//! config and the manifest.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

/// The busybox binary the image carries.
pub const BUSYBOX: &str = "/bin/busybox";

fn sha256_hex(bytes: &[u8]) -> anyhow::Result<String> {
    // sha256sum is coreutils: on every machine the tests run on.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("blob");
    std::fs::write(&file, bytes)?;
    let out = Command::new("sha256sum").arg(&file).output()?;
    anyhow::ensure!(out.status.success(), "sha256sum failed");
    Ok(String::from_utf8(out.stdout)?
        .split_whitespace()
        .next()
        .context("sha256sum printed nothing")?
        .to_owned())
}

/// Writes `bytes` as a blob of `layout` and returns its descriptor.
fn blob(layout: &Path, media_type: &str, bytes: &[u8]) -> anyhow::Result<serde_json::Value> {
    let hex = sha256_hex(bytes)?;
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(&hex), bytes)?;
    Ok(serde_json::json!({
        "mediaType": media_type,
        "digest": format!("sha256:{hex}"),
        "size": bytes.len(),
    }))
}

fn tar(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let status = Command::new("tar")
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-C",
        ])
        .arg(dir)
        .arg("-cf")
        .arg(out)
        .arg(".")
        .status()
        .context("running tar")?;
    anyhow::ensure!(status.success(), "tar failed");
    Ok(())
}

/// Builds `DIR/busybox.tar`: image `name` (e.g.
/// `docker.io/slate/busybox:test`) with busybox at `/bin/busybox`.
pub fn busybox_archive(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin"))?;
    std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).context(BUSYBOX)?;
    let layer_tar = dir.join("layer.tar");
    tar(&rootfs, &layer_tar)?;
    let layer_bytes = std::fs::read(&layer_tar)?;

    let layout = dir.join("layout");
    std::fs::create_dir_all(&layout)?;
    let layer = blob(
        &layout,
        "application/vnd.oci.image.layer.v1.tar",
        &layer_bytes,
    )?;
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/bin/busybox"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
    });
    let config = blob(
        &layout,
        "application/vnd.oci.image.config.v1+json",
        &serde_json::to_vec(&config)?,
    )?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": [layer],
    });
    let mut manifest = blob(
        &layout,
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::to_vec(&manifest)?,
    )?;
    manifest["platform"] = serde_json::json!({"architecture": "amd64", "os": "linux"});
    manifest["annotations"] = serde_json::json!({
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": name.rsplit(':').next().unwrap_or("latest"),
    });
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [manifest],
    });
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index)?)?;
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let archive = dir.join("busybox.tar");
    tar(&layout, &archive)?;
    Ok(archive)
}
