//! What apid is told of the running machine config: nothing secret.
//!
//! apid runs as an unprivileged user and never reads the config itself
//! (it holds the CA keys, the cluster secret and the join token). machined
//! publishes this view beside it ([`API_VIEW_FILE`], readable by apid's
//! group): the machine CA certificate that client certificates must come
//! from, and the extra names apid's certificate should carry. The
//! certificate itself is signed by machined (`slate.trust.v1`).
//!
//! [`API_VIEW_FILE`]: slate_common::constants::API_VIEW_FILE

use serde::{Deserialize, Serialize};

use crate::{ConfigError, MachineConfig};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiView {
    /// The machine CA certificate, PEM.
    pub ca_pem: String,
    /// `machine.certSANs`.
    pub cert_sans: Vec<String>,
}

impl ApiView {
    pub fn of(config: &MachineConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            ca_pem: config.machine.ca.crt_pem()?,
            cert_sans: config.machine.cert_sans.clone(),
        })
    }

    pub fn to_json(&self) -> Result<String, ConfigError> {
        serde_json::to_string(self).map_err(ConfigError::Json)
    }

    pub fn from_json(text: &str, source_name: &str) -> Result<Self, ConfigError> {
        serde_json::from_str(text).map_err(|e| ConfigError::Parse {
            source_name: source_name.to_owned(),
            line: e.line() as u64,
            column: e.column() as u64,
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_holds_the_ca_certificate_and_no_secret() {
        let bundle = crate::generate::generate(&crate::generate::Options {
            cluster_name: "t".into(),
            endpoint: "https://10.0.0.1:6443".into(),
            additional_sans: vec!["api.example".into()],
            client_endpoints: vec![],
            install_disk: None,
            secrets: None,
        })
        .unwrap();
        let config = &bundle.controlplane;
        let json = ApiView::of(config).unwrap().to_json().unwrap();
        let view = ApiView::from_json(&json, "view").unwrap();
        assert_eq!(view.ca_pem, config.machine.ca.crt_pem().unwrap());
        assert_eq!(view.cert_sans, config.machine.cert_sans);
        assert!(!json.contains("PRIVATE KEY"), "{json}");
        for secret in [
            config.machine.ca.key.as_deref().unwrap(),
            &config.machine.token,
            config.cluster.secret.as_deref().unwrap(),
        ] {
            assert!(!json.contains(secret));
        }
    }
}
