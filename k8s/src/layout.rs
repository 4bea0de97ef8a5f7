//! Where Kubernetes' files live on a Slate node.
//!
//! Secrets live on `/run` (tmpfs): they are derived from the config at
//! every boot, so they never reach a disk. Each control-plane component
//! gets a directory of its own, mounted read-only into its pod, holding
//! only what it needs (the controller-manager alone sees the CA key).

use std::path::{Path, PathBuf};

/// The API server's secure port on control-plane nodes.
pub const API_SERVER_PORT: u16 = 6443;

/// Where a component finds its directory inside its container.
pub const IN_POD_DIR: &str = "/etc/kubernetes/slate";

/// The files' roots on the node.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Root of the per-component secret directories.
    pub secrets: PathBuf,
    /// kubelet's static pod directory.
    pub manifests: PathBuf,
}

impl Default for Layout {
    fn default() -> Self {
        Self {
            secrets: "/run/slate/kubernetes".into(),
            manifests: "/var/lib/kubelet/manifests".into(),
        }
    }
}

impl Layout {
    /// Under `root`, for tests.
    pub fn under(root: &Path) -> Self {
        Self {
            secrets: root.join("secrets"),
            manifests: root.join("manifests"),
        }
    }

    /// A component's secret directory (`kube-apiserver`, …).
    pub fn component(&self, name: &str) -> PathBuf {
        self.secrets.join(name)
    }

    /// The admin kubeconfig machined applies the bootstrap manifests with.
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.secrets.join("admin.kubeconfig")
    }
}
