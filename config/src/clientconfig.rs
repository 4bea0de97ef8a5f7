//! The client config (`~/.slate/config`, like talosconfig): named contexts,
//! each with endpoints, default nodes, the CA to trust and the client
//! certificate that carries the user's role.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::PemKeyPair;
use slate_pki::CertAndKey;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The context used when none is named on the command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    /// apid endpoints to connect to (`host` or `host:port`).
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Nodes to act on when `-n` is not given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    /// base64 PEM of the machine CA.
    pub ca: String,
    /// base64 PEM of the client certificate.
    pub crt: String,
    /// base64 PEM of the client private key.
    pub key: String,
}

impl Context {
    pub fn new(endpoints: Vec<String>, ca_pem: &str, client: &CertAndKey) -> Self {
        let ca = PemKeyPair::from_pem(ca_pem, None).crt;
        let id = PemKeyPair::from_pem(&client.cert_pem, Some(&client.key_pem));
        Self {
            endpoints,
            nodes: Vec::new(),
            ca,
            crt: id.crt,
            key: id.key.unwrap_or_default(),
        }
    }

    pub fn ca_pem(&self) -> Result<String, ClientConfigError> {
        decode(&self.ca, "ca")
    }

    pub fn identity(&self) -> Result<CertAndKey, ClientConfigError> {
        Ok(CertAndKey {
            cert_pem: decode(&self.crt, "crt")?,
            key_pem: decode(&self.key, "key")?,
        })
    }
}

fn decode(b64: &str, field: &'static str) -> Result<String, ClientConfigError> {
    PemKeyPair {
        crt: b64.to_owned(),
        key: None,
    }
    .crt_pem()
    .map_err(|e| ClientConfigError::Field {
        field,
        reason: e.to_string(),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ClientConfigError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: line {line}, column {column}: {message}")]
    Parse {
        path: PathBuf,
        line: u64,
        column: u64,
        message: String,
    },
    #[error("context field {field}: {reason}")]
    Field { field: &'static str, reason: String },
    #[error("serializing the client config")]
    Serialize(#[source] serde_saphyr::ser::Error),
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: slate_common::fs::AtomicWriteError,
    },
}

impl ClientConfig {
    pub fn load(path: &Path) -> Result<Self, ClientConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClientConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        crate::yaml::from_str(&text).map_err(|e| ClientConfigError::Parse {
            path: path.to_owned(),
            line: e.line,
            column: e.column,
            message: e.message,
        })
    }

    pub fn to_yaml(&self) -> Result<String, ClientConfigError> {
        crate::yaml::to_string(self).map_err(ClientConfigError::Serialize)
    }

    /// Writes the config with mode 0600: it holds a private key.
    pub fn save(&self, path: &Path) -> Result<(), ClientConfigError> {
        let text = self.to_yaml()?;
        slate_common::fs::write_atomic(path, text.as_bytes(), 0o600).map_err(|source| {
            ClientConfigError::Write {
                path: path.to_owned(),
                source,
            }
        })
    }
}
