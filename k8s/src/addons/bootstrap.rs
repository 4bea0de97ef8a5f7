//! What lets kubelets join: the bootstrap-token Secret of `machine.token`
//! and the RBAC bindings kubeadm and Talos create, so that a kubelet
//! holding the token may ask for a client certificate, gets it approved
//! automatically, and may renew it.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use slate_config::MachineConfig;

use crate::manifest::meta;
use crate::{K8sError, Manifest};

/// The group every bootstrap token authenticates as.
pub const BOOTSTRAPPERS: &str = "system:bootstrappers";

/// The Secret for token `ID.SECRET`, as the API server's bootstrap-token
/// authenticator reads it (`bootstrap-token-ID` in kube-system).
pub fn token_secret(token: &str, description: &str) -> Result<Secret, K8sError> {
    let (id, secret) = token
        .split_once('.')
        .ok_or_else(|| K8sError::config("machine.token", "is not ID.SECRET"))?;
    let data = [
        ("token-id", id),
        ("token-secret", secret),
        ("usage-bootstrap-authentication", "true"),
        ("usage-bootstrap-signing", "true"),
        ("description", description),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    Ok(Secret {
        metadata: meta(&format!("bootstrap-token-{id}"), Some("kube-system")),
        type_: Some("bootstrap.kubernetes.io/token".into()),
        string_data: Some(data),
        ..Default::default()
    })
}

fn binding(name: &str, cluster_role: &str, group: &str) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: meta(name, None),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: cluster_role.into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Group".into(),
            name: group.into(),
            namespace: None,
        }]),
    }
}

/// The token Secret and the three bindings.
pub fn objects(config: &MachineConfig) -> Result<Vec<Manifest>, K8sError> {
    Ok(vec![
        Manifest::of(&token_secret(
            &config.machine.token,
            "The cluster's bootstrap token (machine.token), made by Slate.",
        )?)?,
        Manifest::of(&binding(
            "system-bootstrap-node-bootstrapper",
            "system:node-bootstrapper",
            BOOTSTRAPPERS,
        ))?,
        Manifest::of(&binding(
            "system-bootstrap-approve-node-client-csr",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            BOOTSTRAPPERS,
        ))?,
        Manifest::of(&binding(
            "system-bootstrap-node-renewal",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            "system:nodes",
        ))?,
    ])
}
