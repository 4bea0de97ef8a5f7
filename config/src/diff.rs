//! What changes between two configs, which of those changes need a reboot,
//! and a copy of a config that is safe to show (secrets redacted).
//!
//! The diff is by field path, not by text line: `slatectl apply-config
//! --dry-run` then says `~ machine.network.hostname: "a" -> "b"`, which is
//! what a reviewer needs, and the reboot decision works on the same paths.

use std::collections::BTreeMap;

use serde_json::Value;

use super::MachineConfig;

/// Shown instead of a secret.
pub const REDACTED: &str = "<redacted>";

/// Paths whose value is secret.
const SECRET_PATHS: &[&str] = &[
    "machine.token",
    "machine.ca.key",
    "cluster.secret",
    "cluster.ca.key",
    "cluster.etcd.ca.key",
    "cluster.aggregatorCA.key",
    "cluster.serviceAccount.key",
];

/// Changes that cannot take effect while the node runs: they change what
/// the node is (its role, its cluster identity, what etcd and kubelet were
/// bootstrapped with, where it is installed). Everything else is applied
/// live by the daemon that owns it.
const REBOOT_PATHS: &[&str] = &[
    "version",
    "machine.type",
    "machine.token",
    "machine.install",
    "cluster.id",
    "cluster.name",
    "cluster.controlPlane",
    "cluster.ca",
    "cluster.network",
    "cluster.etcd",
];

/// One changed field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added {
        path: String,
        new: String,
    },
    Removed {
        path: String,
    },
    Modified {
        path: String,
        old: String,
        new: String,
    },
}

impl Change {
    pub fn path(&self) -> &str {
        match self {
            Self::Added { path, .. } | Self::Removed { path } | Self::Modified { path, .. } => path,
        }
    }

    /// Whether this change takes a reboot to take effect.
    pub fn needs_reboot(&self) -> bool {
        REBOOT_PATHS.iter().any(|p| under(self.path(), p))
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Added { path, new } => write!(f, "+ {path}: {new}"),
            Self::Removed { path } => write!(f, "- {path}"),
            Self::Modified { path, old, new } => write!(f, "~ {path}: {old} -> {new}"),
        }
    }
}

/// `path` is `prefix` or lies under it.
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

impl MachineConfig {
    /// The config with every secret replaced by [`REDACTED`]; for showing,
    /// never for use.
    pub fn redacted(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        for path in SECRET_PATHS {
            let pointer = format!("/{}", path.replace('.', "/"));
            if let Some(slot) = v.pointer_mut(&pointer) {
                *slot = Value::String(REDACTED.into());
            }
        }
        v
    }
}

/// Field-by-field changes from `old` to `new`, secrets redacted.
pub fn diff(old: &MachineConfig, new: &MachineConfig) -> Vec<Change> {
    let (a, b) = (leaves(&old.redacted()), leaves(&new.redacted()));
    // A secret that changed shows as a change of <redacted>: the reviewer
    // learns that it changed, not what to.
    let secret_changed = |path: &str| {
        let pointer = format!("/{}", path.replace('.', "/"));
        let raw = |c: &MachineConfig| serde_json::to_value(c).ok()?.pointer(&pointer).cloned();
        raw(old) != raw(new)
    };
    let mut changes = Vec::new();
    for (path, old_value) in &a {
        match b.get(path) {
            None => changes.push(Change::Removed { path: path.clone() }),
            Some(new_value)
                if new_value != old_value
                    || (SECRET_PATHS.contains(&path.as_str()) && secret_changed(path)) =>
            {
                changes.push(Change::Modified {
                    path: path.clone(),
                    old: old_value.clone(),
                    new: new_value.clone(),
                })
            }
            Some(_) => {}
        }
    }
    for (path, new_value) in &b {
        if !a.contains_key(path) {
            changes.push(Change::Added {
                path: path.clone(),
                new: new_value.clone(),
            });
        }
    }
    changes.sort_by(|x, y| x.path().cmp(y.path()));
    changes
}

/// Leaves of a JSON tree by path; lists of scalars are one leaf, lists of
/// mappings are indexed (`interfaces[0].addresses`).
fn leaves(v: &Value) -> BTreeMap<String, String> {
    fn walk(v: &Value, path: String, out: &mut BTreeMap<String, String>) {
        let join = |k: &str| {
            if path.is_empty() {
                k.to_owned()
            } else {
                format!("{path}.{k}")
            }
        };
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    walk(child, join(k), out);
                }
            }
            Value::Array(items) if items.iter().any(Value::is_object) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, format!("{path}[{i}]"), out);
                }
            }
            leaf => {
                out.insert(path, leaf.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(v, String::new(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{Options, generate};

    fn config() -> MachineConfig {
        generate(&Options {
            cluster_name: "demo".into(),
            endpoint: "https://10.0.0.1:6443".into(),
            ..Default::default()
        })
        .unwrap()
        .controlplane
    }

    #[test]
    fn live_changes_and_reboot_changes_are_told_apart() {
        let old = config();
        let mut new = old.clone();
        new.machine.network.hostname = Some("node-2".into());
        new.machine.cert_sans.push("10.0.0.9".into());
        let changes = diff(&old, &new);
        let shown: Vec<String> = changes.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                r#"+ machine.certSANs: ["10.0.0.9"]"#,
                r#"+ machine.network.hostname: "node-2""#
            ]
        );
        assert!(!changes.iter().any(Change::needs_reboot));

        new.cluster.network.pod_subnets = vec!["10.200.0.0/16".into()];
        let changes = diff(&old, &new);
        let reboot: Vec<&str> = changes
            .iter()
            .filter(|c| c.needs_reboot())
            .map(Change::path)
            .collect();
        assert_eq!(reboot, ["cluster.network.podSubnets"]);
        assert!(diff(&old, &old).is_empty());
    }

    /// Every private key and the token of a control-plane config (the one
    /// with every key) are redacted: a field added later that holds a key
    /// fails here until it is in SECRET_PATHS.
    #[test]
    fn no_private_key_survives_redaction() {
        let c = config();
        let shown = serde_json::to_string(&c.redacted()).unwrap();
        // base64 of "-----BEGIN PRIVATE KEY", as every key field holds it.
        assert!(
            !shown.contains("LS0tLS1CRUdJTiBQUklWQVRFIEtFWS"),
            "a private key is shown: {shown}"
        );
        assert!(!shown.contains(&c.machine.token));
        assert!(
            serde_json::to_string(&c)
                .unwrap()
                .contains("LS0tLS1CRUdJTiBQUklWQVRFIEtFWS")
        );
    }

    #[test]
    fn secrets_never_show_but_their_change_does() {
        let old = config();
        let text = serde_json::to_string(&old.redacted()).unwrap();
        for secret in [
            &old.machine.token,
            old.machine.ca.key.as_ref().unwrap(),
            old.cluster.secret.as_ref().unwrap(),
        ] {
            assert!(!text.contains(secret.as_str()));
        }
        let mut new = old.clone();
        new.machine.token = "zzzzzz.zzzzzzzzzzzzzzzz".into();
        let changes = diff(&old, &new);
        assert_eq!(changes.len(), 1);
        assert_eq!(
            changes[0].to_string(),
            r#"~ machine.token: "<redacted>" -> "<redacted>""#
        );
        assert!(changes[0].needs_reboot());
    }
}
