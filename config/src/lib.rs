//! The machine config: one YAML document, `version: v1alpha1`, with a
//! `machine:` half (this node) and a `cluster:` half (shared by all nodes).
//!
//! - [`schema`]: the typed config, every field documented;
//! - [`validate`]: semantic checks that report every problem at once, each
//!   with its YAML path and, when parsed from YAML, line and column.
//!
//! Beside it, in this crate:
//! - [`clientconfig`]: slatectl's contexts;
//! - [`generate`]: a new cluster's secrets and configs (`gen config`);
//! - [`extension_service`]: services declared in the extension layer;
//! - [`yaml`]: YAML in and out with positions in errors.
//!
//! Parsing is strict: unknown fields are errors, so a typo never silently
//! does nothing; and the input is bounded ([`MAX_CONFIG_BYTES`]) because a
//! config arrives from the network and from disks.

pub mod api_view;
pub mod clientconfig;
pub mod diff;
pub mod extension_service;
#[cfg(feature = "feed")]
pub mod feed;
pub mod generate;
pub mod join;
mod kubernetes;
pub mod patch;
mod schema;
mod validate;
pub mod yaml;

use base64::Engine as _;

pub use api_view::ApiView;
pub use schema::*;
pub use validate::{Problem, endpoint_host, is_dns_name, is_label};

/// The only schema version this build understands.
pub const CONFIG_VERSION: &str = "v1alpha1";

/// A config larger than this is refused before parsing (a real one is a
/// few KiB; the bound keeps a hostile client from making a node parse
/// gigabytes).
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// What the node is installed on; decides which fields are required.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// A cloud VM or QEMU: the platform provides the disk.
    #[default]
    Cloud,
    /// Bare metal: `machine.install.disk` is required.
    Metal,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cloud" => Ok(Self::Cloud),
            "metal" => Ok(Self::Metal),
            _ => Err(format!("unknown mode {s:?} (expected cloud or metal)")),
        }
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
        .map_err(|e| ConfigError::Pem {
            field,
            reason: format!("not base64: {e}"),
        })?;
    String::from_utf8(bytes).map_err(|_| ConfigError::Pem {
        field,
        reason: "not UTF-8 PEM text".into(),
    })
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
    /// The document parsed but its values are wrong: every problem found.
    #[error("{source_name}: {}", render_problems(.problems))]
    Invalid {
        source_name: String,
        problems: Vec<Problem>,
    },
    #[error(
        "{source_name}: {size} bytes is larger than a machine config may be ({MAX_CONFIG_BYTES} bytes)"
    )]
    TooLarge { source_name: String, size: usize },
    #[error("{source_name}: not a text file (a machine config is UTF-8 YAML)")]
    NotText { source_name: String },
    #[error("{field}: {reason}")]
    Pem { field: &'static str, reason: String },
    #[error("serializing the machine config")]
    Serialize(#[source] serde_saphyr::ser::Error),
    #[error("serializing the machine config as JSON")]
    Json(#[source] serde_json::Error),
}

impl ConfigError {
    /// The reason alone, without the field name.
    pub(crate) fn reason(&self) -> String {
        match self {
            Self::Pem { reason, .. } => reason.clone(),
            other => other.to_string(),
        }
    }
}

fn render_problems(problems: &[Problem]) -> String {
    match problems {
        [one] => one.to_string(),
        many => {
            let mut s = format!("{} problems:", many.len());
            for p in many {
                s.push_str("\n  ");
                s.push_str(&p.to_string());
            }
            s
        }
    }
}

impl MachineConfig {
    /// Parses and validates a config for a cloud node. `source_name` (a file
    /// name, say) is only used to tell the user where an error is.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, ConfigError> {
        Self::parse_for(text, source_name, Mode::Cloud)
    }

    /// Parses and validates a config for the given [`Mode`].
    pub fn parse_for(text: &str, source_name: &str, mode: Mode) -> Result<Self, ConfigError> {
        if text.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                source_name: source_name.to_owned(),
                size: text.len(),
            });
        }
        if text.contains('\0') {
            return Err(ConfigError::NotText {
                source_name: source_name.to_owned(),
            });
        }
        let config: Self = crate::yaml::from_str(text).map_err(|e| ConfigError::Parse {
            source_name: source_name.to_owned(),
            line: e.line,
            column: e.column,
            message: e.message,
        })?;
        let mut problems = validate::validate(&config, mode);
        if !problems.is_empty() {
            let index = crate::yaml::PathIndex::build(text);
            for p in &mut problems {
                if let Some(pos) = index.find(&p.path) {
                    (p.line, p.column) = (pos.line, pos.column);
                }
            }
            return Err(ConfigError::Invalid {
                source_name: source_name.to_owned(),
                problems,
            });
        }
        Ok(config)
    }

    /// Like [`parse_for`](Self::parse_for), from bytes that may not be text
    /// at all (a config drive, an API request).
    pub fn parse_bytes(bytes: &[u8], source_name: &str, mode: Mode) -> Result<Self, ConfigError> {
        if bytes.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                source_name: source_name.to_owned(),
                size: bytes.len(),
            });
        }
        let text = std::str::from_utf8(bytes).map_err(|_| ConfigError::NotText {
            source_name: source_name.to_owned(),
        })?;
        Self::parse_for(text, source_name, mode)
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
        let problems = validate::validate(&config, Mode::Cloud);
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                source_name: source_name.to_owned(),
                problems,
            });
        }
        Ok(config)
    }

    pub fn to_yaml(&self) -> Result<String, ConfigError> {
        crate::yaml::to_string(self).map_err(ConfigError::Serialize)
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
    key: LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCg==
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
                    line: 9,
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
    fn wrong_version_and_endpoint_are_named_with_their_lines() {
        let err = MachineConfig::parse(&MINIMAL.replace("v1alpha1", "v2"), "f").unwrap_err();
        assert_eq!(
            err.to_string(),
            "f: version: \"v2\" is not supported (expected v1alpha1) (line 1, col 10)"
        );
        let err =
            MachineConfig::parse(&MINIMAL.replace("https://10", "http://10"), "f").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("f: cluster.controlPlane.endpoint: \"http://10.0.0.1:6443\" is not"),
            "{err}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = MINIMAL
            .replace("abcdef.0123", "ABCDEF.0123")
            .replace("name: demo", "name: Demo");
        let Err(ConfigError::Invalid { problems, .. }) = MachineConfig::parse(&text, "f") else {
            panic!("expected validation problems")
        };
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["machine.token", "cluster.name"]);
        assert_eq!((problems[1].line, problems[1].column), (9, 9));
    }

    #[test]
    fn two_routes_to_one_destination_at_one_metric_are_refused() {
        let text = MINIMAL.replace(
            "  ca:\n    crt: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==\n    key:",
            "  network:
    interfaces:
      - interface: eth0
        addresses: [10.0.0.5/24]
        routes: [{network: 0.0.0.0/0, gateway: 10.0.0.1}]
      - interface: eth1
        addresses: [10.1.0.5/24]
        routes: [{network: 0.0.0.0/0, gateway: 10.1.0.1}]
  ca:
    crt: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==
    key:",
        );
        let err = MachineConfig::parse(&text, "f").unwrap_err().to_string();
        assert!(
            err.contains("interfaces[1].routes[0].network: 0.0.0.0/0 with metric 1024 is already routed at machine.network.interfaces[0].routes[0]"),
            "{err}"
        );
    }

    #[test]
    fn metal_mode_needs_an_install_disk() {
        assert!(MachineConfig::parse_for(MINIMAL, "f", Mode::Cloud).is_ok());
        let err = MachineConfig::parse_for(MINIMAL, "f", Mode::Metal).unwrap_err();
        assert!(
            err.to_string()
                .contains("machine.install.disk: is required"),
            "{err}"
        );
    }

    #[test]
    fn oversized_and_binary_input_is_refused_before_parsing() {
        let big = format!("{MINIMAL}#{}\n", "x".repeat(MAX_CONFIG_BYTES));
        assert!(matches!(
            MachineConfig::parse(&big, "f"),
            Err(ConfigError::TooLarge { .. })
        ));
        assert!(matches!(
            MachineConfig::parse_bytes(&[0xff, 0xfe, 0x00, 0x12], "f", Mode::Cloud),
            Err(ConfigError::NotText { .. })
        ));
        assert!(matches!(
            MachineConfig::parse_bytes(b"version: v1alpha1\0", "f", Mode::Cloud),
            Err(ConfigError::NotText { .. })
        ));
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
        assert!(err.to_string().starts_with("p: version:"), "{err}");
    }

    #[test]
    fn debug_output_hides_private_keys() {
        let pair = PemKeyPair::from_pem("CERT", Some("SECRET KEY"));
        let shown = format!("{pair:?}");
        assert!(!shown.contains(&pair.key.clone().unwrap()), "{shown}");
    }
}
