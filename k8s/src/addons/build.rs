//! Small builders the add-ons share: labels, volumes, env vars, RBAC, serializers.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, EnvVar, EnvVarSource, HostPathVolumeSource, ObjectFieldSelector, Volume,
    VolumeMount,
};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::K8sError;

/// `items` as owned strings (args, verbs, capabilities).
pub(crate) fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// A string map of `pairs`: labels, selectors, node selectors.
pub(crate) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// `meta` with `pairs` added to its labels (Slate's, from
/// [`meta`](crate::manifest::meta)).
pub(crate) fn labeled(mut meta: ObjectMeta, pairs: &[(&str, &str)]) -> ObjectMeta {
    meta.labels.get_or_insert_default().extend(labels(pairs));
    meta
}

/// Resource quantities (`cpu: 100m`, `memory: 70Mi`) of `items`.
pub(crate) fn quantities(items: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
        .collect()
}

/// An env var set from a field of the pod (`metadata.name`,
/// `spec.nodeName`, ...).
pub(crate) fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The mount of volume `name` at `mount_path`, read-only if `read_only`
/// (else `readOnly` is left out).
pub(crate) fn mount(name: &str, mount_path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: mount_path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

/// A hostPath volume at `path` on the node (of `type_`, if given) and its
/// mount at `mount_path` in the container.
pub(crate) fn host_path(
    name: &str,
    path: &str,
    type_: Option<&str>,
    mount_path: &str,
    read_only: bool,
) -> (Volume, VolumeMount) {
    let volume = Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource {
            path: path.into(),
            type_: type_.map(str::to_owned),
        }),
        ..Default::default()
    };
    (volume, mount(name, mount_path, read_only))
}

/// A volume `name` holding every key of ConfigMap `config_map`.
pub(crate) fn config_map_volume(name: &str, config_map: &str) -> Volume {
    Volume {
        name: name.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The ClusterRoleBinding `metadata` (a cluster-wide object's) that grants
/// ClusterRole `cluster_role` to ServiceAccount `namespace/service_account`.
pub(crate) fn service_account_binding(
    metadata: ObjectMeta,
    cluster_role: &str,
    namespace: &str,
    service_account: &str,
) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata,
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: cluster_role.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: service_account.into(),
            namespace: Some(namespace.into()),
            ..Default::default()
        }]),
    }
}

/// `value` as pretty JSON, a failure named by `what`.
pub(crate) fn to_json(what: &str, value: &serde_json::Value) -> Result<String, K8sError> {
    serde_json::to_string_pretty(value).map_err(|source| K8sError::Serialize {
        what: what.to_owned(),
        source,
    })
}

/// `doc` as YAML, a failure named by `what`.
pub(crate) fn to_yaml(what: &str, doc: &serde_json::Value) -> Result<String, K8sError> {
    serde_saphyr::to_string(doc).map_err(|source| K8sError::Yaml {
        what: what.to_owned(),
        source,
    })
}
