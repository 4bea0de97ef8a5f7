//! Kubernetes on Slate's control-plane nodes.
//!
//! # Background
//! A control-plane node runs etcd itself (machined) and the Kubernetes
//! control plane as static pods that kubelet starts from its manifest
//! directory, as kubeadm and Talos do. Everything here is derived from the
//! machine config alone: the cluster CA, the etcd CA, the front-proxy CA
//! and the service-account key are in `cluster:` on control-plane nodes,
//! so every control-plane node makes the same cluster from the same config.
//!
//! # Design
//! - [`pki`]: the certificates and keys each component needs, issued from
//!   the config's CAs (kubeadm's set), one directory per component so that
//!   each sees only its own secrets;
//! - [`kubeconfig`]: kubeconfig files (typed, written as YAML);
//! - [`static_pods`]: kube-apiserver, kube-controller-manager and
//!   kube-scheduler as `k8s-openapi` Pods;
//! - [`addons`]: what is applied once the API answers (bootstrap-token
//!   Secret and RBAC, kube-proxy, CoreDNS, flannel), typed;
//! - [`apply`]: server-side apply of those objects with the `kube` crate;
//! - [`layout`]: where the files live on the node.
//!
//! Pure functions build every artifact; machined writes them and runs the
//! apply loop. Nothing here starts a process.
//!
//! # Limitations
//! The Kubernetes binaries and images cannot be fetched where Slate is
//! built and tested. The artifacts are checked with real tools (openssl,
//! kubectl, the `k8s-openapi` types) and the apply path against a stand-in
//! HTTPS server; none of it has met a real kube-apiserver there
//! (docs/kubernetes.md).

pub mod addons;
pub mod apply;
pub mod error;
pub mod images;
pub mod kubeconfig;
pub mod layout;
pub mod manifest;
pub mod pki;
pub mod static_pods;

pub use error::K8sError;
pub use manifest::Manifest;
