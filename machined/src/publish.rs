//! Publishing machined's verdict on the config for the other daemons.

use slate_common::fs::{AtomicWriteError, write_atomic};
use slate_config::MachineConfig;

use crate::Paths;
use crate::configdrive::UserData;

#[derive(Debug)]
pub enum Verdict {
    /// A valid config and its published (JSON) form.
    Valid {
        config: Box<MachineConfig>,
        json: String,
    },
    /// A config was found but cannot be used: file, line and error.
    Invalid(String),
    /// The config drive exists but could not be read.
    Unreadable(String),
    /// No config anywhere.
    Missing,
    /// The disk holds Slate state that cannot be used (STATE does not
    /// mount, or its configs do not load): the node was someone's, so it
    /// refuses a config without a certificate until its disk is fixed or
    /// wiped. The reason is what went wrong.
    Refused(String),
}

impl Verdict {
    pub fn from_user_data(found: &UserData) -> Self {
        match MachineConfig::parse(&found.text, &found.source_name()) {
            Ok(config) => Self::valid(config),
            Err(e) => Self::Invalid(e.to_string()),
        }
    }

    /// A config that passed validation; refused if its machine CA cannot
    /// sign (a key that does not load, or belongs to another certificate):
    /// the node would be unreachable.
    pub fn valid(config: MachineConfig) -> Self {
        if let Err(e) = usable_machine_ca(&config) {
            return Self::Invalid(e);
        }
        match config.to_json() {
            Ok(json) => Self::Valid {
                config: Box::new(config),
                json,
            },
            Err(e) => Self::Invalid(e.to_string()),
        }
    }
}

/// The machine CA's certificate and key load together as a CA; without a
/// key (a worker, whose certificate a control-plane node signs) the
/// certificate alone must read.
pub fn usable_machine_ca(config: &MachineConfig) -> Result<(), String> {
    let ca = &config.machine.ca;
    let crt = ca.crt_pem().map_err(|e| format!("machine.ca.crt: {e}"))?;
    match ca.key_pem().map_err(|e| format!("machine.ca.key: {e}"))? {
        Some(key) => slate_pki::Authority::from_pem(&crt, &key)
            .map(drop)
            .map_err(|e| format!("machine.ca: {e}")),
        None => slate_pki::pem_to_der(&crt)
            .map(drop)
            .map_err(|e| format!("machine.ca.crt: {e}")),
    }
}

/// Writes the config or the error file (and removes the other one), and
/// tells the console.
pub fn publish(verdict: &Verdict, paths: &Paths) -> Result<(), AtomicWriteError> {
    let reason = match verdict {
        Verdict::Valid { config, json } => {
            let _ = std::fs::remove_file(&paths.config_error);
            // Mode 0600: the config holds the CA keys.
            write_atomic(&paths.config, json.as_bytes(), 0o600)?;
            // apid's view, 0640 in the apid group's directory: no secret.
            // After the config, so a view never names a config not yet
            // published; apid asks for its certificate when it appears.
            match slate_config::ApiView::of(config).and_then(|v| v.to_json()) {
                Ok(view) => write_atomic(&paths.api_view, view.as_bytes(), 0o640)?,
                Err(e) => tracing::error!("publishing apid's view of the config: {e}"),
            }
            tracing::info!(
                "machine config loaded: {} node of cluster {}",
                config.machine.kind,
                config.cluster.name
            );
            return Ok(());
        }
        Verdict::Invalid(e) => format!("invalid machine config: {e}"),
        Verdict::Unreadable(e) => format!("machine config unreadable: {e}"),
        Verdict::Refused(e) => format!(
            "{e}: this node refuses apply-config without a client certificate of its \
             machine CA (a node that was configured must not be claimable by anyone); \
             fix the disk, or wipe STATE to reclaim the node"
        ),
        Verdict::Missing => "no machine config (none on STATE, no volume labelled cidata \
                             with a user-data file): waiting for apply-config"
            .to_owned(),
    };
    tracing::error!("{reason}");
    let _ = std::fs::remove_file(&paths.api_view);
    let _ = std::fs::remove_file(&paths.config);
    write_atomic(&paths.config_error, format!("{reason}\n").as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn paths(dir: &std::path::Path) -> Paths {
        Paths::under(dir)
    }

    #[test]
    fn invalid_yaml_publishes_file_line_and_error_and_no_config() {
        let dir = tempfile::tempdir().unwrap();
        let paths = paths(dir.path());
        std::fs::write(&paths.config, "stale").unwrap();
        std::fs::write(&paths.api_view, "stale").unwrap();
        let found = UserData {
            device: PathBuf::from("/dev/vdb"),
            text: "version: v1alpha1\nmachine: [\n".into(),
        };
        publish(&Verdict::from_user_data(&found), &paths).unwrap();
        let error = std::fs::read_to_string(&paths.config_error).unwrap();
        assert!(
            error.starts_with("invalid machine config: /dev/vdb:/user-data: line "),
            "{error}"
        );
        assert!(
            !paths.config.exists() && !paths.api_view.exists(),
            "a stale config must not survive an invalid one"
        );
    }

    #[test]
    fn valid_config_is_published_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let paths = paths(dir.path());
        let bundle = slate_config::generate::generate(&slate_config::generate::Options {
            cluster_name: "t".into(),
            endpoint: "https://10.0.0.1:6443".into(),
            additional_sans: vec![],
            client_endpoints: vec![],
            install_disk: None,
            secrets: None,
        })
        .unwrap();
        let text = bundle.worker.to_yaml().unwrap();
        let found = UserData {
            device: PathBuf::from("/dev/vdb"),
            text,
        };
        publish(&Verdict::from_user_data(&found), &paths).unwrap();
        let published = std::fs::read_to_string(&paths.config).unwrap();
        assert_eq!(
            MachineConfig::from_json(&published, "p").unwrap(),
            bundle.worker
        );
        assert_eq!(
            std::fs::metadata(&paths.config)
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        assert!(!paths.config_error.exists());
        // apid's view: group-readable, the CA certificate, no secret.
        let view = std::fs::read_to_string(&paths.api_view).unwrap();
        assert_eq!(
            std::fs::metadata(&paths.api_view)
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o640
        );
        let view = slate_config::ApiView::from_json(&view, "view").unwrap();
        assert_eq!(view.ca_pem, bundle.worker.machine.ca.crt_pem().unwrap());
        assert!(
            !std::fs::read_to_string(&paths.api_view)
                .unwrap()
                .contains("PRIVATE KEY")
        );
    }
}
