//! Server-side apply of [`Manifest`]s with the `kube` crate: each object
//! is PATCHed with `application/apply-patch+yaml` under the field manager
//! `slate`, forcing conflicts (Slate owns what it deploys), so applying
//! again is a no-op and a changed config updates the objects in place.

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::{K8sError, Manifest};

/// The field manager of everything Slate applies.
pub const FIELD_MANAGER: &str = "slate";

/// A client for the cluster `kubeconfig` points at.
pub async fn client(kubeconfig: Kubeconfig) -> Result<kube::Client, K8sError> {
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| K8sError::config("kubeconfig", e.to_string()))?;
    kube::Client::try_from(config).map_err(K8sError::Client)
}

/// Applies `manifests` in order; stops at the first refusal, which the
/// caller retries (every apply is idempotent).
pub async fn apply_all(client: &kube::Client, manifests: &[Manifest]) -> Result<(), K8sError> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for m in manifests {
        let api: Api<DynamicObject> = match &m.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &m.resource),
            None => Api::all_with(client.clone(), &m.resource),
        };
        api.patch(&m.name, &params, &Patch::Apply(&m.body))
            .await
            .map_err(|source| K8sError::Apply {
                what: m.describe(),
                source,
            })?;
        tracing::debug!(object = %m.describe(), "applied");
    }
    Ok(())
}

/// Deletes `manifests` (objects Slate applied that must go, such as the
/// token Secret of a forgotten worker); one that is gone already counts
/// as deleted.
pub async fn delete_all(client: &kube::Client, manifests: &[Manifest]) -> Result<(), K8sError> {
    for m in manifests {
        let api: Api<DynamicObject> = match &m.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &m.resource),
            None => Api::all_with(client.clone(), &m.resource),
        };
        match api.delete(&m.name, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(object = %m.describe(), "deleted"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => {
                return Err(K8sError::Apply {
                    what: format!("deleting {}", m.describe()),
                    source,
                });
            }
        }
    }
    Ok(())
}
