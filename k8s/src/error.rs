//! Why a Kubernetes artifact could not be made or applied.

#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    /// A field the control plane needs is missing or unusable.
    #[error("{field}: {reason}")]
    Config { field: String, reason: String },
    #[error(transparent)]
    Pki(#[from] slate_pki::PkiError),
    #[error("serializing {what}")]
    Serialize {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("serializing {what} as YAML")]
    Yaml {
        what: String,
        #[source]
        source: serde_saphyr::ser::Error,
    },
    #[error("writing {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Atomic(#[from] slate_common::fs::AtomicWriteError),
    /// The API server refused or could not be reached.
    #[error("applying {what}")]
    Apply {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("connecting to the Kubernetes API")]
    Client(#[source] kube::Error),
}

impl K8sError {
    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
