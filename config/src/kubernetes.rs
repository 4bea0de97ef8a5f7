//! The Kubernetes half of `cluster:`: the control-plane components a
//! control-plane node runs as static pods, the add-ons applied once the
//! API answers, and the keys only control-plane nodes hold.
//!
//! Field names follow Talos's config (`apiServer`, `controllerManager`,
//! `scheduler`, `proxy`, `coreDNS`, `aggregatorCA`, `serviceAccount`), so a
//! Talos user finds them where they expect.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// The Kubernetes release whose images are the defaults, and whose API
/// types (`k8s-openapi`) the manifests are built with.
pub const KUBERNETES_VERSION: &str = "v1.37.0";

/// A control-plane component run as a static pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Component {
    /// Container image; by default `registry.k8s.io/<component>:<version>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Extra flags, without the leading `--`; they replace Slate's value
    /// of the same flag.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_args: BTreeMap<String, String>,
    /// Host paths mounted into the component's container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_volumes: Vec<ExtraVolume>,
    /// CPU and memory requests and limits, e.g. `{requests: {cpu: 200m}}`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub resources: Resources,
}

/// The API server: a component with extra names for its certificate.
/// (Its fields are [`Component`]'s spelled out: serde cannot flatten into
/// a struct that refuses unknown fields.)
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiServer {
    /// Container image; by default `registry.k8s.io/kube-apiserver:<version>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Extra flags, without the leading `--`; they replace Slate's value
    /// of the same flag.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_args: BTreeMap<String, String>,
    /// Host paths mounted into the API server's container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_volumes: Vec<ExtraVolume>,
    /// CPU and memory requests and limits.
    #[serde(default, skip_serializing_if = "is_default")]
    pub resources: Resources,
    /// Extra names and addresses for the API server's certificate, besides
    /// the endpoint's host, the node's addresses and the in-cluster names.
    #[serde(rename = "certSANs", default, skip_serializing_if = "Vec::is_empty")]
    pub cert_sans: Vec<String>,
}

impl ApiServer {
    /// The settings every component has.
    pub fn component(&self) -> Component {
        Component {
            image: self.image.clone(),
            extra_args: self.extra_args.clone(),
            extra_volumes: self.extra_volumes.clone(),
            resources: self.resources.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExtraVolume {
    /// Path on the node (absolute).
    pub host_path: String,
    /// Path in the container (absolute).
    pub mount_path: String,
    /// Mount it read-only.
    #[serde(default, skip_serializing_if = "is_default")]
    pub read_only: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    /// `cpu` and `memory` quantities the scheduler reserves.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, String>,
    /// `cpu` and `memory` quantities the container may not exceed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, String>,
}

/// An add-on applied through the API once it answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Addon {
    /// Do not deploy it (bring your own).
    #[serde(default, skip_serializing_if = "is_default")]
    pub disabled: bool,
    /// Container image; the pinned default otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// The pod network (CNI) deployed with the cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Cni {
    /// `flannel` (default) or `none` (bring your own CNI).
    #[serde(default)]
    pub name: CniName,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CniName {
    /// flannel with its VXLAN backend.
    #[default]
    Flannel,
    /// No CNI: pods stay pending until one is installed.
    None,
}

/// The service-account token signing key, the same on every
/// control-plane node (ECDSA P-256, base64 of its PEM text).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccount {
    pub key: String,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("key", &"<redacted>")
            .finish()
    }
}

impl ServiceAccount {
    /// The key as PEM text.
    pub fn key_pem(&self) -> Result<String, crate::ConfigError> {
        crate::decode_pem("key", &self.key)
    }
}
