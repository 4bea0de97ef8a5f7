//! Patches to a machine config, as Talos users write them:
//! - a YAML (or JSON) **mapping** is a strategic merge: it is laid over the
//!   config key by key;
//! - a YAML (or JSON) **sequence** is an RFC 6902 JSON patch
//!   (`[{op: add, path: /machine/certSANs/-, value: 10.0.0.9}]`), applied
//!   with the `json-patch` crate.
//!
//! Strategic merge rules (RFC 7396 merge patch, which `json-patch` also
//! offers, replaces lists whole; Talos users expect lists to grow, so the
//! merge is ours):
//! - mappings merge recursively; a `null` value deletes the key;
//! - lists of mappings that carry an identity key (`interface` in
//!   `machine.network.interfaces`, `vlanId` in `vlans`) merge item by item
//!   with the item of the same identity, and new items are appended;
//! - other lists are appended to, skipping items already present;
//! - anything else is replaced.
//!
//! The patched document is validated as a whole, like any config.

use serde_json::Value;

use super::{ConfigError, MachineConfig, Mode};

/// Keys that identify an item of a list of mappings.
const IDENTITY_KEYS: &[&str] = &["interface", "vlanId"];

#[derive(Debug, Clone, PartialEq)]
pub enum Patch {
    /// A fragment of a config, merged strategically.
    Merge(Value),
    /// RFC 6902 operations.
    Json6902(json_patch::Patch),
}

#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("{source_name}: line {line}, column {column}: {message}")]
    Parse {
        source_name: String,
        line: u64,
        column: u64,
        message: String,
    },
    #[error(
        "{source_name}: a patch is a mapping (strategic merge) or a list of RFC 6902 operations"
    )]
    Shape { source_name: String },
    #[error("{source_name}: not a list of RFC 6902 operations: {reason}")]
    Operations { source_name: String, reason: String },
    #[error("{source_name}: {reason}")]
    Apply { source_name: String, reason: String },
    #[error("the patched config is not valid")]
    Invalid(#[source] ConfigError),
}

impl Patch {
    /// Parses a patch from YAML or JSON text (JSON is YAML).
    pub fn parse(text: &str, source_name: &str) -> Result<Self, PatchError> {
        let value: Value = crate::yaml::from_str(text).map_err(|e| PatchError::Parse {
            source_name: source_name.to_owned(),
            line: e.line,
            column: e.column,
            message: e.message,
        })?;
        match value {
            Value::Object(_) => Ok(Self::Merge(value)),
            Value::Array(_) => serde_json::from_value(value)
                .map(Self::Json6902)
                .map_err(|e| PatchError::Operations {
                    source_name: source_name.to_owned(),
                    reason: e.to_string(),
                }),
            _ => Err(PatchError::Shape {
                source_name: source_name.to_owned(),
            }),
        }
    }
}

/// Applies `patches` in order and validates the result for `mode`.
/// `patches` pairs each patch with the name it came from, for errors.
pub fn apply(
    config: &MachineConfig,
    patches: &[(String, Patch)],
    mode: Mode,
) -> Result<MachineConfig, PatchError> {
    let mut doc =
        serde_json::to_value(config).map_err(|e| PatchError::Invalid(ConfigError::Json(e)))?;
    for (source_name, patch) in patches {
        match patch {
            Patch::Merge(fragment) => merge(&mut doc, fragment),
            Patch::Json6902(ops) => {
                json_patch::patch(&mut doc, ops).map_err(|e| PatchError::Apply {
                    source_name: source_name.clone(),
                    reason: e.to_string(),
                })?
            }
        }
    }
    // Through YAML text, so that the checks and their messages are exactly
    // those of a config read from a file.
    let text =
        crate::yaml::to_string(&doc).map_err(|e| PatchError::Invalid(ConfigError::Serialize(e)))?;
    MachineConfig::parse_for(&text, "patched config", mode).map_err(|mut e| {
        // Positions would point into a document the user never sees; the
        // paths say where.
        if let ConfigError::Invalid { problems, .. } = &mut e {
            for p in problems {
                (p.line, p.column) = (0, 0);
            }
        }
        PatchError::Invalid(e)
    })
}

/// Lays `patch` over `doc` by the strategic merge rules above.
pub fn merge(doc: &mut Value, patch: &Value) {
    match (doc, patch) {
        (Value::Object(doc), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    doc.remove(key);
                } else if let Some(existing) = doc.get_mut(key) {
                    merge(existing, value);
                } else {
                    doc.insert(key.clone(), value.clone());
                }
            }
        }
        (Value::Array(doc), Value::Array(patch)) => {
            for item in patch {
                if let Some(existing) = identity(item)
                    .and_then(|(key, id)| doc.iter_mut().find(|d| d.get(key) == Some(id)))
                {
                    merge(existing, item);
                } else if !doc.contains(item) {
                    doc.push(item.clone());
                }
            }
        }
        (doc, patch) => *doc = patch.clone(),
    }
}

fn identity(item: &Value) -> Option<(&'static str, &Value)> {
    IDENTITY_KEYS
        .iter()
        .find_map(|key| item.get(*key).map(|id| (*key, id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_follows_its_rules() {
        let mut doc = json!({
            "certSANs": ["a"],
            "network": {
                "hostname": "old",
                "interfaces": [{"interface": "eth0", "dhcp": true, "addresses": ["10.0.0.1/24"]}],
            },
            "drop": 1,
        });
        let patch = json!({
            "certSANs": ["a", "b"],
            "network": {
                "hostname": "new",
                "interfaces": [
                    {"interface": "eth0", "addresses": ["10.0.0.2/24"]},
                    {"interface": "eth1", "dhcp": true},
                ],
            },
            "drop": null,
        });
        merge(&mut doc, &patch);
        assert_eq!(
            doc,
            json!({
                "certSANs": ["a", "b"],
                "network": {
                    "hostname": "new",
                    "interfaces": [
                        {"interface": "eth0", "dhcp": true, "addresses": ["10.0.0.1/24", "10.0.0.2/24"]},
                        {"interface": "eth1", "dhcp": true},
                    ],
                },
            })
        );
    }

    #[test]
    fn a_patched_config_is_validated_whole() {
        let bundle = crate::generate::generate(&crate::generate::Options {
            cluster_name: "demo".into(),
            endpoint: "https://10.0.0.1:6443".into(),
            ..Default::default()
        })
        .unwrap();
        let ok = Patch::parse("machine: {network: {hostname: node-1}}", "a").unwrap();
        let six = Patch::parse(
            "[{op: add, path: /machine/certSANs, value: [n.example]}]",
            "b",
        )
        .unwrap();
        let patched = apply(
            &bundle.worker,
            &[("a".into(), ok.clone()), ("b".into(), six)],
            Mode::Cloud,
        )
        .unwrap();
        assert_eq!(patched.machine.network.hostname.as_deref(), Some("node-1"));
        assert_eq!(patched.machine.cert_sans, ["n.example"]);

        let bad = Patch::parse("cluster: {network: {podSubnets: [10.0.0.0/33]}}", "c").unwrap();
        let err = apply(&bundle.worker, &[("c".into(), bad)], Mode::Cloud).unwrap_err();
        let PatchError::Invalid(inner) = &err else {
            panic!("{err}")
        };
        assert_eq!(
            inner.to_string(),
            "patched config: cluster.network.podSubnets[1]: \"10.0.0.0/33\" is not a CIDR"
        );
        let gone = Patch::parse("[{op: remove, path: /machine/nope}]", "d.yaml").unwrap();
        let err = apply(&bundle.worker, &[("d.yaml".into(), gone)], Mode::Cloud).unwrap_err();
        assert!(err.to_string().starts_with("d.yaml: "), "{err}");
    }

    #[test]
    fn patch_shape_decides_its_kind() {
        assert!(matches!(
            Patch::parse("machine: {certSANs: [x]}", "p").unwrap(),
            Patch::Merge(_)
        ));
        assert!(matches!(
            Patch::parse(r#"[{"op": "remove", "path": "/machine/certSANs"}]"#, "p").unwrap(),
            Patch::Json6902(_)
        ));
        let err = Patch::parse("- {op: explode, path: /x}", "p.yaml").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("p.yaml: not a list of RFC 6902"),
            "{err}"
        );
        let err = Patch::parse("42", "p.yaml").unwrap_err();
        assert!(matches!(err, PatchError::Shape { .. }), "{err}");
    }
}
