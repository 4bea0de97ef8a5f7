//! The pod network's plugin directories. containerd's CRI plugin runs the
//! CNI plugins from one directory and reads network configs from another;
//! both are on the read-only root by default (`/opt/cni/bin`,
//! `/etc/cni/net.d`), so Slate points containerd at directories under
//! /var that the CNI's DaemonSet can write (flannel copies its plugin and
//! config there: [`slate_k8s::addons::flannel`]). The standard plugins
//! flannel delegates to (bridge, host-local, loopback, portmap) come from
//! the extension layer (Debian's containernetworking-plugins) and are
//! linked into the plugin directory before containerd starts.

use std::path::{Path, PathBuf};

pub use slate_k8s::addons::flannel::{CNI_BIN_DIR, CNI_CONF_DIR};

/// The plugins linked from the layer, when it has them.
pub const PLUGINS: &[&str] = &["bridge", "host-local", "loopback", "portmap"];

/// Where the plugin and config directories are.
#[derive(Debug, Clone)]
pub struct CniDirs {
    pub bin: PathBuf,
    pub conf: PathBuf,
}

impl Default for CniDirs {
    fn default() -> Self {
        Self {
            bin: CNI_BIN_DIR.into(),
            conf: CNI_CONF_DIR.into(),
        }
    }
}

/// Makes both directories and links each of [`PLUGINS`] that `layer_bin`
/// has into the plugin directory (a link of an earlier boot is replaced;
/// a plugin the CNI installed there itself is left alone).
pub fn prepare(layer_bin: &Path, dirs: &CniDirs) -> Result<(), String> {
    for dir in [&dirs.bin, &dirs.conf] {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    for plugin in PLUGINS {
        let from = layer_bin.join(plugin);
        if !from.is_file() {
            continue;
        }
        let link = dirs.bin.join(plugin);
        match std::fs::symlink_metadata(&link) {
            Ok(m) if m.file_type().is_symlink() => std::fs::remove_file(&link)
                .map_err(|e| format!("replacing {}: {e}", link.display()))?,
            Ok(_) => continue,
            Err(_) => {}
        }
        std::os::unix::fs::symlink(&from, &link)
            .map_err(|e| format!("linking {}: {e}", link.display()))?;
    }
    Ok(())
}
