//! What the add-ons' tests share: a generated config and typed readings of
//! the manifests.

use serde::Serialize;
use serde::de::DeserializeOwned;
use slate_config::MachineConfig;
use slate_config::generate::{Options, generate};

use crate::Manifest;

/// The control-plane config `generate` makes for cluster `test` at
/// `https://cp.example:6443`.
pub(crate) fn config() -> MachineConfig {
    generate(&Options {
        cluster_name: "test".into(),
        endpoint: "https://cp.example:6443".into(),
        ..Default::default()
    })
    .unwrap()
    .controlplane
}

/// The manifest's body, as the API server would read it.
pub(crate) fn typed<K: DeserializeOwned + Serialize>(m: &Manifest) -> K {
    let text = serde_json::to_string(&m.body).unwrap();
    let object: K = serde_json::from_str(&text).unwrap();
    assert_eq!(serde_json::to_value(&object).unwrap(), m.body);
    object
}

/// The first of `objects` of `kind`.
pub(crate) fn find<'a>(objects: &'a [Manifest], kind: &str) -> &'a Manifest {
    objects.iter().find(|m| m.resource.kind == kind).unwrap()
}
