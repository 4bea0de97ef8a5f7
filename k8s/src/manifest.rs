//! A Kubernetes object ready to apply: built from a typed `k8s-openapi`
//! value, kept as JSON with the API resource it belongs to, so that one
//! list can hold Secrets, DaemonSets and ClusterRoles alike.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{Metadata, Resource};
use kube::discovery::ApiResource;
use serde::Serialize;

use crate::K8sError;

/// One object to apply.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Group, version, kind and plural of the object's resource.
    pub resource: ApiResource,
    /// Namespace, for namespaced kinds.
    pub namespace: Option<String>,
    pub name: String,
    /// The object as JSON, `apiVersion` and `kind` included.
    pub body: serde_json::Value,
}

impl Manifest {
    /// The manifest of a typed object. Its name must be set.
    pub fn of<K>(object: &K) -> Result<Self, K8sError>
    where
        K: Resource + Metadata<Ty = ObjectMeta> + Serialize,
    {
        let meta = object.metadata();
        let name = meta.name.clone().unwrap_or_default();
        let what = format!("{} {name}", K::KIND);
        let body = serde_json::to_value(object).map_err(|source| K8sError::Serialize {
            what: what.clone(),
            source,
        })?;
        Ok(Self {
            resource: ApiResource::erase::<K>(&()),
            namespace: meta.namespace.clone(),
            name,
            body,
        })
    }

    /// `Kind namespace/name`, for logs and errors.
    pub fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.resource.kind, self.name),
            None => format!("{} {}", self.resource.kind, self.name),
        }
    }

    /// The URL path of the object, as server-side apply PATCHes it.
    pub fn url_path(&self) -> String {
        let base = if self.resource.group.is_empty() {
            format!("/api/{}", self.resource.version)
        } else {
            format!("/apis/{}/{}", self.resource.group, self.resource.version)
        };
        match &self.namespace {
            Some(ns) => format!(
                "{base}/namespaces/{ns}/{}/{}",
                self.resource.plural, self.name
            ),
            None => format!("{base}/{}/{}", self.resource.plural, self.name),
        }
    }
}

/// ObjectMeta with a name, a namespace (if any) and Slate's labels.
pub fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(
            [(
                "app.kubernetes.io/managed-by".to_owned(),
                "slate".to_owned(),
            )]
            .into(),
        ),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::api::rbac::v1::ClusterRoleBinding;

    #[test]
    fn paths_follow_the_api_layout() {
        let s = Secret {
            metadata: meta("a", Some("kube-system")),
            ..Default::default()
        };
        let m = Manifest::of(&s).unwrap();
        assert_eq!(m.url_path(), "/api/v1/namespaces/kube-system/secrets/a");
        assert_eq!(m.body["apiVersion"], "v1");
        assert_eq!(m.body["kind"], "Secret");
        let b = ClusterRoleBinding {
            metadata: meta("b", None),
            ..Default::default()
        };
        let m = Manifest::of(&b).unwrap();
        assert_eq!(
            m.url_path(),
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/b"
        );
        assert_eq!(m.describe(), "ClusterRoleBinding b");
    }
}
