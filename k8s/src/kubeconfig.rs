//! kubeconfig files, typed with the `kube` crate's [`Kubeconfig`], written
//! as YAML: the control-plane components', the admin's
//! (`slatectl kubeconfig`), and merging one into another as kubectl reads
//! them (`~/.kube/config`).

use base64::Engine as _;
use kube::config::{
    AuthInfo, Cluster, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext,
};
use slate_pki::CertAndKey;

use crate::K8sError;

/// A kubeconfig with one cluster (`cluster` at `server`, trusting
/// `ca_pem`), one user (`user`, presenting `identity`) and one context
/// `user@cluster`, which is current.
pub fn with_certificate(
    cluster: &str,
    server: &str,
    ca_pem: &str,
    user: &str,
    identity: &CertAndKey,
) -> Kubeconfig {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let context = format!("{user}@{cluster}");
    Kubeconfig {
        clusters: vec![NamedCluster {
            name: cluster.to_owned(),
            cluster: Some(Cluster {
                server: Some(server.to_owned()),
                certificate_authority_data: Some(b64(ca_pem)),
                ..Default::default()
            }),
            ..Default::default()
        }],
        auth_infos: vec![NamedAuthInfo {
            name: context.clone(),
            auth_info: Some(AuthInfo {
                client_certificate_data: Some(b64(&identity.cert_pem)),
                client_key_data: Some(b64(&identity.key_pem).into()),
                ..Default::default()
            }),
            ..Default::default()
        }],
        contexts: vec![NamedContext {
            name: context.clone(),
            context: Some(Context {
                cluster: cluster.to_owned(),
                user: Some(context.clone()),
                namespace: None,
                extensions: None,
                other: Default::default(),
            }),
            ..Default::default()
        }],
        current_context: Some(context),
        kind: Some("Config".into()),
        api_version: Some("v1".into()),
        ..Default::default()
    }
}

/// The kubeconfig as YAML.
pub fn render(config: &Kubeconfig) -> Result<String, K8sError> {
    serde_saphyr::to_string(config).map_err(|source| K8sError::Yaml {
        what: "a kubeconfig".into(),
        source,
    })
}

/// Merges `new` into `existing` as `slatectl kubeconfig --merge` does:
/// clusters, users and contexts of `new` replace those of the same name
/// (a re-issued kubeconfig of the same cluster supersedes the old one),
/// the others stay, and `new`'s current context becomes current.
pub fn merge(mut existing: Kubeconfig, new: Kubeconfig) -> Kubeconfig {
    fn replace<T>(list: &mut Vec<T>, items: Vec<T>, name: impl Fn(&T) -> &str) {
        for item in items {
            match list.iter().position(|x| name(x) == name(&item)) {
                Some(i) => list[i] = item,
                None => list.push(item),
            }
        }
    }
    replace(&mut existing.clusters, new.clusters, |c| &c.name);
    replace(&mut existing.auth_infos, new.auth_infos, |u| &u.name);
    replace(&mut existing.contexts, new.contexts, |c| &c.name);
    if new.current_context.is_some() {
        existing.current_context = new.current_context;
    }
    existing.kind.get_or_insert_with(|| "Config".into());
    existing.api_version.get_or_insert_with(|| "v1".into());
    existing
}

/// Parses a kubeconfig (as kubectl would accept it).
pub fn parse(text: &str) -> Result<Kubeconfig, String> {
    Kubeconfig::from_yaml(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: &str) -> CertAndKey {
        CertAndKey {
            cert_pem: format!("CERT {n}"),
            key_pem: format!("KEY {n}"),
        }
    }

    #[test]
    fn merging_replaces_same_names_and_keeps_the_rest() {
        let a = with_certificate("a", "https://a:6443", "CA", "admin", &id("a1"));
        let b = with_certificate("b", "https://b:6443", "CA", "admin", &id("b"));
        let a2 = with_certificate("a", "https://a2:6443", "CA", "admin", &id("a2"));
        let merged = merge(merge(a, b), a2);
        let text = render(&merged).unwrap();
        let back = parse(&text).unwrap();
        assert_eq!(back.clusters.len(), 2);
        assert_eq!(back.contexts.len(), 2);
        assert_eq!(back.current_context.as_deref(), Some("admin@a"));
        let a = back.clusters.iter().find(|c| c.name == "a").unwrap();
        assert_eq!(
            a.cluster.as_ref().unwrap().server.as_deref(),
            Some("https://a2:6443")
        );
    }
}
