//! Container image archives of the extension layer (`slate-image
//! --image-archive`): imported into containerd's `k8s.io` namespace once
//! containerd answers, before kubelet starts (kubelet's preparation waits
//! for [`IMPORTED`]), so a site without registry access runs the control
//! plane from images it brought. Importing is `ctr images import` from the
//! layer, the tool containerd ships for it: containerd 1.6 (Debian's) has
//! no transfer API, and unpacking layers through the snapshot and diff
//! services by hand would re-implement `ctr`.
//!
//! Also the images listing (`slatectl images`), read through containerd's
//! images service as [`crate::containers`] reads containers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1::ListImagesRequest;
use containerd_client::services::v1::images_client::ImagesClient;
use slate_proto::machine::ImageInfo;

use crate::containers::{ContainersError, in_ns};

/// The archives' directory in the layer.
pub const ARCHIVES: &str = "/usr/local/images";
/// Written once every archive was tried: what each import said.
pub const IMPORTED: &str = "/run/slate/images-imported";
/// The namespace kubelet's CRI uses.
pub const K8S_NAMESPACE: &str = "k8s.io";
/// One import may take this long (a few hundred MB under TCG).
const IMPORT_TIMEOUT: Duration = Duration::from_secs(600);

/// The `.tar` files of `dir`, by name.
pub fn archives(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "tar"))
        .collect();
    out.sort();
    out
}

/// Whether kubelet may start: no archives, or all were tried.
pub fn ready(archives_dir: &Path, imported: &Path) -> bool {
    archives(archives_dir).is_empty() || imported.exists()
}

/// Imports every archive of `dir` with `ctr` once containerd answers on
/// `socket`, then writes `imported`. A failed import is logged with the
/// archive and ctr's words; the others still run.
pub async fn import_all(ctr: PathBuf, dir: PathBuf, socket: PathBuf, imported: PathBuf) {
    let archives = archives(&dir);
    if archives.is_empty() {
        return;
    }
    while crate::containers::list(&socket, K8S_NAMESPACE)
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut report = String::new();
    for archive in &archives {
        let mut cmd = tokio::process::Command::new(&ctr);
        cmd.arg("--address")
            .arg(&socket)
            .args(["--namespace", K8S_NAMESPACE, "images", "import"])
            .arg(archive)
            .env("LD_LIBRARY_PATH", crate::services::layer::EXTENSIONS_LIB)
            .kill_on_drop(true);
        let line = match tokio::time::timeout(IMPORT_TIMEOUT, cmd.output()).await {
            Ok(Ok(out)) if out.status.success() => {
                let said = String::from_utf8_lossy(&out.stdout);
                tracing::info!("imported {}: {}", archive.display(), said.trim());
                format!("{}: imported\n", archive.display())
            }
            Ok(Ok(out)) => {
                let said = String::from_utf8_lossy(&out.stderr);
                tracing::error!("importing {}: {}", archive.display(), said.trim());
                format!("{}: failed: {}\n", archive.display(), said.trim())
            }
            Ok(Err(e)) => {
                tracing::error!("running {}: {e}", ctr.display());
                format!("{}: failed: {e}\n", archive.display())
            }
            Err(_) => {
                tracing::error!(
                    "importing {}: no answer in {IMPORT_TIMEOUT:?}",
                    archive.display()
                );
                format!("{}: failed: timed out\n", archive.display())
            }
        };
        report.push_str(&line);
    }
    if let Err(e) = slate_common::fs::write_atomic(&imported, report.as_bytes(), 0o644) {
        tracing::error!("{}", slate_common::error::chain(&e));
    }
}

/// The images of `namespace` (every namespace when empty).
pub async fn list(socket: &Path, namespace: &str) -> Result<Vec<ImageInfo>, ContainersError> {
    let timeout = crate::containers::TIMEOUT;
    tokio::time::timeout(timeout, list_now(socket, namespace))
        .await
        .map_err(|_| ContainersError::Timeout(timeout))?
}

async fn list_now(socket: &Path, namespace: &str) -> Result<Vec<ImageInfo>, ContainersError> {
    let channel = crate::containers::connect(socket).await?;
    let namespaces = crate::containers::namespaces(&channel, namespace).await?;
    let mut out = Vec::new();
    for ns in namespaces {
        let images = ImagesClient::new(channel.clone())
            .list(in_ns(ListImagesRequest::default(), &ns)?)
            .await
            .map_err(|status| ContainersError::Call {
                what: "images",
                status,
            })?
            .into_inner()
            .images;
        out.extend(images.into_iter().map(|i| {
            let target = i.target.unwrap_or_default();
            ImageInfo {
                namespace: ns.clone(),
                name: i.name,
                digest: target.digest,
                media_type: target.media_type,
            }
        }));
    }
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(out)
}
