//! The images Slate deploys by default, pinned per release. Each can be
//! overridden in the config (`cluster.<component>.image`).

use slate_config::KUBERNETES_VERSION;

/// `registry.k8s.io/<component>:<KUBERNETES_VERSION>`.
pub fn kubernetes(component: &str) -> String {
    format!("registry.k8s.io/{component}:{KUBERNETES_VERSION}")
}

/// CoreDNS, the version kubeadm of the pinned release deploys.
pub const COREDNS: &str = "registry.k8s.io/coredns/coredns:v1.12.1";

/// flannel's daemon and its CNI plugin installer.
pub const FLANNEL: &str = "ghcr.io/flannel-io/flannel:v0.27.4";
pub const FLANNEL_CNI_PLUGIN: &str = "ghcr.io/flannel-io/flannel-cni-plugin:v1.8.0-flannel1";

/// The image of `configured`, or `default`.
pub fn or_default(configured: Option<&str>, default: impl Into<String>) -> String {
    configured.map_or_else(|| default.into(), str::to_owned)
}
