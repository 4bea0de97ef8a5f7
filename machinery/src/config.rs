//! The machine config: one YAML document, `version: v1alpha1`, with a
//! `machine:` half (this node) and a `cluster:` half (shared by all nodes).
//!
//! Only the fields the boot spine uses exist yet; unknown fields are errors,
//! so a typo never silently does nothing. The full schema and its validation
//! with paths grow here.

use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The only schema version this build understands.
pub const CONFIG_VERSION: &str = "v1alpha1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MachineConfig {
    /// Schema version; must be `v1alpha1`.
    pub version: String,
    pub machine: Machine,
    pub cluster: Cluster,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MachineType {
    Controlplane,
    Worker,
}

impl fmt::Display for MachineType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Controlplane => "controlplane",
            Self::Worker => "worker",
        })
    }
}

/// The half of the config that belongs to this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Machine {
    /// Role of the node in the cluster.
    #[serde(rename = "type")]
    pub kind: MachineType,
    /// Token that lets nodes join the cluster.
    pub token: String,
    /// The machine (OS) CA: apid's server certificate is issued from it and
    /// client certificates are checked against it.
    pub ca: PemKeyPair,
    /// Extra names and addresses for apid's server certificate (besides the
    /// node's own addresses, its hostname and loopback).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cert_sans: Vec<String>,
    #[serde(default, skip_serializing_if = "Network::is_empty")]
    pub network: Network,
    #[serde(default, skip_serializing_if = "Install::is_empty")]
    pub install: Install,
}

/// A certificate and, where this node may sign with it, its private key.
/// Both are base64-encoded PEM, as in Talos configs.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PemKeyPair {
    pub crt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl fmt::Debug for PemKeyPair {
    // Never print private keys, not even in debug logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PemKeyPair")
            .field("crt", &self.crt)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl PemKeyPair {
    pub fn from_pem(crt_pem: &str, key_pem: Option<&str>) -> Self {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        Self {
            crt: b64(crt_pem),
            key: key_pem.map(b64),
        }
    }

    /// The certificate as PEM text.
    pub fn crt_pem(&self) -> Result<String, ConfigError> {
        decode_pem("crt", &self.crt)
    }

    /// The private key as PEM text, if present.
    pub fn key_pem(&self) -> Result<Option<String>, ConfigError> {
        self.key
            .as_deref()
            .map(|k| decode_pem("key", k))
            .transpose()
    }
}

fn decode_pem(field: &'static str, b64: &str) -> Result<String, ConfigError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| ConfigError::Invalid {
            field,
            reason: format!("not base64: {e}"),
        })?;
    String::from_utf8(bytes).map_err(|_| ConfigError::Invalid {
        field,
        reason: "not UTF-8 PEM text".into(),
    })
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Network {
    /// Hostname of the node; by default from DHCP, else derived from the MAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

impl Network {
    fn is_empty(&self) -> bool {
        self.hostname.is_none()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Install {
    /// Disk to install to, e.g. `/dev/vda`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
}

impl Install {
    fn is_empty(&self) -> bool {
        self.disk.is_none()
    }
}

/// The half of the config shared by every node of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Cluster {
    pub name: String,
    pub control_plane: ControlPlane,
    /// Kubernetes cluster CA.
    pub ca: PemKeyPair,
    #[serde(default)]
    pub network: ClusterNetwork,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ControlPlane {
    /// URL of the Kubernetes API, e.g. `https://10.0.0.1:6443`.
    pub endpoint: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterNetwork {
    pub pod_subnets: Vec<String>,
    pub service_subnets: Vec<String>,
}

impl Default for ClusterNetwork {
    fn default() -> Self {
        Self {
            pod_subnets: vec!["10.244.0.0/16".into()],
            service_subnets: vec!["10.96.0.0/12".into()],
        }
    }
}

/// Why a machine config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The YAML is malformed or does not match the schema.
    #[error("{source_name}: line {line}, column {column}: {message}")]
    Parse {
        source_name: String,
        line: u64,
        column: u64,
        message: String,
    },
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("serializing the machine config")]
    Serialize(#[source] serde_saphyr::ser::Error),
    #[error("serializing the machine config as JSON")]
    Json(#[source] serde_json::Error),
}

impl MachineConfig {
    /// Parses and validates a config. `source_name` (a file name, say) is
    /// only used to tell the user where an error is.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, ConfigError> {
        let config: Self = crate::yaml::from_str(text).map_err(|e| ConfigError::Parse {
            source_name: source_name.to_owned(),
            line: e.line,
            column: e.column,
            message: e.message,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The published form (see `constants::MACHINE_CONFIG_FILE`).
    pub fn to_json(&self) -> Result<String, ConfigError> {
        serde_json::to_string(self).map_err(ConfigError::Json)
    }

    /// Reads and validates the published form.
    pub fn from_json(text: &str, source_name: &str) -> Result<Self, ConfigError> {
        let config: Self = serde_json::from_str(text).map_err(|e| ConfigError::Parse {
            source_name: source_name.to_owned(),
            line: e.line() as u64,
            column: e.column() as u64,
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_yaml(&self) -> Result<String, ConfigError> {
        crate::yaml::to_string(self).map_err(ConfigError::Serialize)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.version != CONFIG_VERSION {
            return Err(ConfigError::Invalid {
                field: "version",
                reason: format!(
                    "{:?} is not supported (expected {CONFIG_VERSION})",
                    self.version
                ),
            });
        }
        if !self.machine.ca.crt_pem()?.contains("BEGIN CERTIFICATE") {
            return Err(ConfigError::Invalid {
                field: "machine.ca.crt",
                reason: "does not hold a PEM certificate".into(),
            });
        }
        let endpoint = &self.cluster.control_plane.endpoint;
        if !endpoint.starts_with("https://") {
            return Err(ConfigError::Invalid {
                field: "cluster.controlPlane.endpoint",
                reason: format!("{endpoint:?} is not an https:// URL"),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "version: v1alpha1
machine:
  type: worker
  token: abcdef.0123456789abcdef
  ca:
    crt: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==
cluster:
  name: demo
  controlPlane:
    endpoint: https://10.0.0.1:6443
  ca:
    crt: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==
";

    #[test]
    fn minimal_config_parses() {
        let c = MachineConfig::parse(MINIMAL, "user-data").unwrap();
        assert_eq!(c.machine.kind, MachineType::Worker);
        assert_eq!(c.cluster.network, ClusterNetwork::default());
    }

    #[test]
    fn unknown_field_is_reported_with_its_line() {
        let text = MINIMAL.replace("  token:", "  tokn:");
        let err = MachineConfig::parse(&text, "user-data").unwrap_err();
        let ConfigError::Parse {
            source_name,
            line,
            message,
            ..
        } = &err
        else {
            panic!("{err}")
        };
        assert_eq!(source_name, "user-data");
        assert_eq!(*line, 4, "{err}");
        assert!(message.contains("tokn"), "{message}");
    }

    #[test]
    fn broken_yaml_is_reported_with_its_line() {
        let text = MINIMAL.replace("  name: demo", "  name: [demo");
        let err = MachineConfig::parse(&text, "user-data").unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Parse {
                    line: 8,
                    column: 9,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().ends_with(": expected string scalar"),
            "{err}"
        );
        assert!(err.to_string().starts_with("user-data: line "), "{err}");
    }

    #[test]
    fn wrong_version_and_endpoint_are_named() {
        let err = MachineConfig::parse(&MINIMAL.replace("v1alpha1", "v2"), "f").unwrap_err();
        assert!(err.to_string().starts_with("version:"), "{err}");
        let err =
            MachineConfig::parse(&MINIMAL.replace("https://10", "http://10"), "f").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cluster.controlPlane.endpoint:"),
            "{err}"
        );
    }

    #[test]
    fn published_json_round_trips_and_is_validated() {
        let c = MachineConfig::parse(MINIMAL, "user-data").unwrap();
        assert_eq!(
            MachineConfig::from_json(&c.to_json().unwrap(), "p").unwrap(),
            c
        );
        let mut wrong = c.clone();
        wrong.version = "v0".into();
        let err = MachineConfig::from_json(&wrong.to_json().unwrap(), "p").unwrap_err();
        assert!(err.to_string().starts_with("version:"), "{err}");
    }

    #[test]
    fn debug_output_hides_private_keys() {
        let pair = PemKeyPair::from_pem("CERT", Some("SECRET KEY"));
        let shown = format!("{pair:?}");
        assert!(!shown.contains(&pair.key.clone().unwrap()), "{shown}");
    }
}
