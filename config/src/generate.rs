//! `slatectl gen secrets` and `gen config`: a cluster's secrets, the
//! machine configs for both node types, and an admin client config.
//!
//! The secrets (cluster identity, bootstrap token, the three CAs) are the
//! part of a cluster that must stay the same for every node: keeping them in
//! `secrets.yaml` lets configs for more nodes be made later
//! (`gen config --with-secrets`).

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::clientconfig::{ClientConfig, Context};
use crate::{
    self as config, ApiBalancer, CONFIG_VERSION, Cluster, ClusterNetwork, ControlPlane, Etcd,
    Install, Kubelet, Machine, MachineConfig, MachineType, Mesh, Network, PemKeyPair, Time,
};
use slate_pki::{self as pki, Authority, PkiError, Role};

/// Everything `gen config` writes.
#[derive(Debug)]
pub struct Bundle {
    pub controlplane: MachineConfig,
    pub worker: MachineConfig,
    pub client: ClientConfig,
}

/// A cluster's secrets: `secrets.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Secrets {
    pub cluster: ClusterSecrets,
    pub secrets: TokenSecrets,
    pub certs: Certs,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterSecrets {
    /// `cluster.id` of every config (base64, 32 bytes).
    pub id: String,
    /// `cluster.secret` of every config (base64, 32 bytes).
    pub secret: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TokenSecrets {
    /// `machine.token`.
    pub bootstrap_token: String,
}

/// The CAs, certificate and key each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Certs {
    /// Machine (OS) CA: apid and slatectl.
    pub os: PemKeyPair,
    /// Kubernetes CA.
    pub k8s: PemKeyPair,
    /// etcd CA.
    pub etcd: PemKeyPair,
    /// Front-proxy (aggregation layer) CA.
    pub aggregator: PemKeyPair,
    /// Service-account token signing key (ECDSA P-256), base64 PEM.
    pub service_account: crate::ServiceAccount,
}

impl Secrets {
    /// New random secrets for cluster `name`.
    pub fn generate(name: &str) -> Result<Self, GenerateError> {
        let ca = |what: &str| -> Result<PemKeyPair, GenerateError> {
            let ca = pki::generate_ca(&format!("{name} {what} CA"))?;
            Ok(PemKeyPair::from_pem(&ca.cert_pem, Some(&ca.key_pem)))
        };
        // The Kubernetes CAs are ECDSA: not every Kubernetes client
        // verifies Ed25519 (see `pki::generate_ca_ecdsa`).
        let k8s_ca = |what: &str| -> Result<PemKeyPair, GenerateError> {
            let ca = pki::generate_ca_ecdsa(&format!("{name} {what} CA"))?;
            Ok(PemKeyPair::from_pem(&ca.cert_pem, Some(&ca.key_pem)))
        };
        let (sa_key, _) = pki::leaf::generate_signing_key()?;
        Ok(Self {
            cluster: ClusterSecrets {
                id: random_b64()?,
                secret: random_b64()?,
            },
            secrets: TokenSecrets {
                bootstrap_token: random_token()?,
            },
            certs: Certs {
                os: ca("machine")?,
                k8s: k8s_ca("kubernetes")?,
                etcd: ca("etcd")?,
                aggregator: k8s_ca("front-proxy")?,
                service_account: crate::ServiceAccount {
                    key: base64::engine::general_purpose::STANDARD.encode(sa_key),
                },
            },
        })
    }

    /// Reads `secrets.yaml`, checking that every CA has its key. Keys of
    /// an older Slate (PKCS#8 v2) come out as v1, so the configs made from
    /// them hold only keys other tools read.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, GenerateError> {
        let mut s: Self = crate::yaml::from_str(text).map_err(|e| GenerateError::Secrets {
            source_name: source_name.to_owned(),
            reason: format!("line {}, column {}: {}", e.line, e.column, e.message),
        })?;
        for (field, pair) in [
            ("certs.os", &s.certs.os),
            ("certs.k8s", &s.certs.k8s),
            ("certs.etcd", &s.certs.etcd),
            ("certs.aggregator", &s.certs.aggregator),
        ] {
            let has_key = pair.key_pem().ok().flatten().is_some();
            if !has_key || pair.crt_pem().is_err() {
                return Err(GenerateError::Secrets {
                    source_name: source_name.to_owned(),
                    reason: format!("{field}: needs a base64 PEM certificate and key"),
                });
            }
        }
        if s.certs.service_account.key_pem().is_err() {
            return Err(GenerateError::Secrets {
                source_name: source_name.to_owned(),
                reason: "certs.serviceAccount.key: needs a base64 PEM private key".into(),
            });
        }
        for pair in [
            &mut s.certs.os,
            &mut s.certs.k8s,
            &mut s.certs.etcd,
            &mut s.certs.aggregator,
        ] {
            if let (Ok(crt), Ok(Some(key))) = (pair.crt_pem(), pair.key_pem()) {
                *pair = PemKeyPair::from_pem(&crt, Some(&slate_pki::keys::to_v1_pem(&key)));
            }
        }
        Ok(s)
    }

    pub fn to_yaml(&self) -> Result<String, config::ConfigError> {
        crate::yaml::to_string(self).map_err(config::ConfigError::Serialize)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub cluster_name: String,
    /// Kubernetes API URL, `https://HOST:PORT`.
    pub endpoint: String,
    /// Extra names for apid's server certificate (`machine.certSANs`).
    pub additional_sans: Vec<String>,
    /// apid endpoints written into the client config.
    pub client_endpoints: Vec<String>,
    pub install_disk: Option<String>,
    /// Secrets of an existing cluster; new ones when `None`.
    pub secrets: Option<Secrets>,
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("cluster name {0:?} must be 1-63 characters of a-z, 0-9 and '-'")]
    BadName(String),
    #[error("endpoint {0:?} must look like https://HOST:PORT")]
    BadEndpoint(String),
    #[error("{source_name}: {reason}")]
    Secrets { source_name: String, reason: String },
    #[error("the system random number generator failed")]
    Random,
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
}

pub fn generate(opts: &Options) -> Result<Bundle, GenerateError> {
    let name = &opts.cluster_name;
    if !config::is_label(name) {
        return Err(GenerateError::BadName(name.clone()));
    }
    let host = config::endpoint_host(&opts.endpoint)
        .ok_or_else(|| GenerateError::BadEndpoint(opts.endpoint.clone()))?;
    let secrets = match &opts.secrets {
        Some(s) => s.clone(),
        None => Secrets::generate(name)?,
    };
    let os_ca = &secrets.certs.os;
    let admin = Authority::from_pem(&os_ca.crt_pem()?, &os_ca.key_pem()?.unwrap_or_default())?
        .issue_client("admin", Role::Admin)?;

    let config = |kind| {
        let controlplane = kind == MachineType::Controlplane;
        // Workers get certificates only; the Kubernetes and etcd CA keys
        // stay on the control plane.
        let public = |pair: &PemKeyPair| PemKeyPair {
            crt: pair.crt.clone(),
            key: if controlplane { pair.key.clone() } else { None },
        };
        MachineConfig {
            version: CONFIG_VERSION.into(),
            machine: Machine {
                kind,
                token: secrets.secrets.bootstrap_token.clone(),
                // Control-plane nodes sign the API certificates; a
                // worker's is signed by their trust service (docs/join.md),
                // so root on a worker cannot mint client certificates.
                ca: public(os_ca),
                cert_sans: opts.additional_sans.clone(),
                network: Network::default(),
                time: Time::default(),
                install: Install {
                    disk: opts.install_disk.clone(),
                    wipe: false,
                },
                kubelet: Kubelet::default(),
            },
            cluster: Cluster {
                id: Some(secrets.cluster.id.clone()),
                secret: Some(secrets.cluster.secret.clone()),
                name: name.clone(),
                control_plane: ControlPlane {
                    endpoint: opts.endpoint.clone(),
                },
                ca: public(&secrets.certs.k8s),
                network: ClusterNetwork::default(),
                etcd: Etcd {
                    ca: controlplane.then(|| secrets.certs.etcd.clone()),
                    extra_args: Default::default(),
                },
                mesh: Mesh::default(),
                api_balancer: ApiBalancer::default(),
                // The front-proxy CA and the token key sign; workers
                // have no use for either.
                aggregator_ca: controlplane.then(|| secrets.certs.aggregator.clone()),
                service_account: controlplane.then(|| secrets.certs.service_account.clone()),
                api_server: Default::default(),
                controller_manager: Default::default(),
                scheduler: Default::default(),
                proxy: Default::default(),
                core_dns: Default::default(),
            },
        }
    };

    let endpoints = if opts.client_endpoints.is_empty() {
        vec![host]
    } else {
        opts.client_endpoints.clone()
    };
    let mut client = ClientConfig {
        context: Some(name.clone()),
        ..Default::default()
    };
    client.contexts.insert(
        name.clone(),
        Context::new(endpoints, &os_ca.crt_pem()?, &admin),
    );

    Ok(Bundle {
        controlplane: config(MachineType::Controlplane),
        worker: config(MachineType::Worker),
        client,
    })
}

/// The config of a new node of `role`, made from a control-plane node's
/// config (`from`): the cluster's identity, secrets and settings, nothing
/// of that node's own (certSANs, network, install disk, kubelet). A worker
/// gets certificates only, as `gen config` writes worker.yaml.
pub fn for_role(from: &MachineConfig, role: MachineType) -> MachineConfig {
    let controlplane = role == MachineType::Controlplane;
    let public = |pair: &PemKeyPair| PemKeyPair {
        crt: pair.crt.clone(),
        key: if controlplane { pair.key.clone() } else { None },
    };
    let mut cluster = from.cluster.clone();
    cluster.ca = public(&from.cluster.ca);
    if !controlplane {
        cluster.etcd.ca = None;
        cluster.aggregator_ca = None;
        cluster.service_account = None;
    }
    MachineConfig {
        version: CONFIG_VERSION.into(),
        machine: Machine {
            kind: role,
            token: from.machine.token.clone(),
            ca: public(&from.machine.ca),
            cert_sans: Vec::new(),
            network: Network::default(),
            time: from.machine.time.clone(),
            install: Install::default(),
            kubelet: Kubelet::default(),
        },
        cluster,
    }
}

fn random_b64() -> Result<String, GenerateError> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| GenerateError::Random)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// A bootstrap token in Kubernetes' `[a-z0-9]{6}.[a-z0-9]{16}` shape.
pub(crate) fn random_token() -> Result<String, GenerateError> {
    use ring::rand::SecureRandom as _;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let rng = ring::rand::SystemRandom::new();
    let mut out = String::with_capacity(23);
    while out.len() < 23 {
        if out.len() == 6 {
            out.push('.');
            continue;
        }
        let mut byte = [0u8; 1];
        rng.fill(&mut byte).map_err(|_| GenerateError::Random)?;
        // 252 is the largest multiple of 36 below 256: rejecting the rest
        // keeps every character equally likely.
        if byte[0] < 252 {
            out.push(ALPHABET[usize::from(byte[0] % 36)] as char);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options {
            cluster_name: "demo".into(),
            endpoint: "https://10.0.0.1:6443".into(),
            additional_sans: vec!["127.0.0.1".into()],
            client_endpoints: vec![],
            install_disk: None,
            secrets: None,
        }
    }

    #[test]
    fn a_worker_made_from_a_control_plane_config_holds_no_ca_key() {
        let bundle = generate(&Options {
            additional_sans: Vec::new(),
            ..opts()
        })
        .unwrap();
        let worker = for_role(&bundle.controlplane, MachineType::Worker);
        assert_eq!(
            worker, bundle.worker,
            "the same as gen config's worker.yaml"
        );
        let cp = for_role(&bundle.controlplane, MachineType::Controlplane);
        assert!(cp.machine.ca.key.is_some() && cp.cluster.etcd.ca.is_some());
        assert!(cp.machine.cert_sans.is_empty(), "certSANs are a node's own");
    }

    #[test]
    fn generated_configs_parse_back() {
        let bundle = generate(&opts()).unwrap();
        for config in [&bundle.controlplane, &bundle.worker] {
            let yaml = config.to_yaml().unwrap();
            assert_eq!(&MachineConfig::parse(&yaml, "gen").unwrap(), config);
        }
        assert!(
            bundle.worker.cluster.ca.key.is_none()
                && bundle.worker.cluster.etcd.ca.is_none()
                && bundle.worker.machine.ca.key.is_none(),
            "workers must not get the machine, Kubernetes or etcd CA keys"
        );
        assert!(bundle.controlplane.machine.ca.key.is_some());
        let ctx = &bundle.client.contexts["demo"];
        assert_eq!(ctx.endpoints, vec!["10.0.0.1".to_string()]);
        let id = ctx.identity().unwrap();
        assert_eq!(
            pki::role_of(&pki::pem_to_der(&id.cert_pem).unwrap()).unwrap(),
            Role::Admin
        );
    }

    #[test]
    fn token_shape() {
        let t = random_token().unwrap();
        assert_eq!(t.len(), 23);
        assert_eq!(t.as_bytes()[6], b'.');
        assert!(
            t.bytes()
                .all(|b| b == b'.' || b.is_ascii_lowercase() || b.is_ascii_digit())
        );
    }

    #[test]
    fn bad_inputs_are_named() {
        let mut o = opts();
        o.cluster_name = "Bad_Name".into();
        assert!(matches!(generate(&o), Err(GenerateError::BadName(_))));
        for url in [
            "http://10.0.0.1:6443",
            "https://10.0.0.1",
            "https://:6443",
            "https://h:0",
        ] {
            let mut o = opts();
            o.endpoint = url.into();
            assert!(
                matches!(generate(&o), Err(GenerateError::BadEndpoint(_))),
                "{url}"
            );
        }
        assert_eq!(
            config::endpoint_host("https://[fd00::1]:6443").as_deref(),
            Some("fd00::1")
        );
    }

    #[test]
    fn configs_from_saved_secrets_belong_to_the_same_cluster() {
        let secrets = Secrets::generate("demo").unwrap();
        let text = secrets.to_yaml().unwrap();
        let mut o = opts();
        o.secrets = Some(Secrets::parse(&text, "secrets.yaml").unwrap());
        let a = generate(&o).unwrap();
        let b = generate(&o).unwrap();
        assert_eq!(a.controlplane.machine.ca, b.controlplane.machine.ca);
        assert_eq!(a.worker.machine.token, secrets.secrets.bootstrap_token);
        assert_eq!(
            a.worker.cluster.secret,
            Some(secrets.cluster.secret.clone())
        );
        // A fresh cluster gets fresh secrets.
        let c = generate(&opts()).unwrap();
        assert_ne!(c.controlplane.machine.ca, a.controlplane.machine.ca);
    }

    #[test]
    fn secrets_without_keys_are_refused() {
        let mut s = Secrets::generate("demo").unwrap();
        s.certs.etcd.key = None;
        let err = Secrets::parse(&s.to_yaml().unwrap(), "secrets.yaml").unwrap_err();
        assert!(
            err.to_string().starts_with("secrets.yaml: certs.etcd:"),
            "{err}"
        );
    }
}
