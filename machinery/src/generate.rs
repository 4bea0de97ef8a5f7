//! `slatectl gen config`: a new cluster's secrets, the machine configs for
//! both node types, and an admin client config.

use crate::clientconfig::{ClientConfig, Context};
use crate::config::{
    CONFIG_VERSION, Cluster, ClusterNetwork, ControlPlane, Install, Machine, MachineConfig,
    MachineType, Network, PemKeyPair,
};
use crate::pki::{self, Authority, PkiError, Role};

/// Everything `gen config` writes.
#[derive(Debug)]
pub struct Bundle {
    pub controlplane: MachineConfig,
    pub worker: MachineConfig,
    pub client: ClientConfig,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub cluster_name: String,
    /// Kubernetes API URL, `https://HOST:PORT`.
    pub endpoint: String,
    /// Extra names for apid's server certificate (`machine.certSANs`).
    pub additional_sans: Vec<String>,
    /// apid endpoints written into the client config.
    pub client_endpoints: Vec<String>,
    pub install_disk: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("cluster name {0:?} must be 1-63 characters of a-z, 0-9 and '-'")]
    BadName(String),
    #[error("endpoint {0:?} must look like https://HOST:PORT")]
    BadEndpoint(String),
    #[error("the system random number generator failed")]
    Random,
    #[error(transparent)]
    Pki(#[from] PkiError),
}

pub fn generate(opts: &Options) -> Result<Bundle, GenerateError> {
    let name = &opts.cluster_name;
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !name_ok {
        return Err(GenerateError::BadName(name.clone()));
    }
    let host = endpoint_host(&opts.endpoint)
        .ok_or_else(|| GenerateError::BadEndpoint(opts.endpoint.clone()))?;

    let machine_ca = pki::generate_ca(&format!("{name} machine CA"))?;
    let kubernetes_ca = pki::generate_ca(&format!("{name} kubernetes CA"))?;
    let admin = Authority::from_pem(&machine_ca.cert_pem, &machine_ca.key_pem)?
        .issue_client("admin", Role::Admin)?;

    let token = token()?;
    let config = |kind| MachineConfig {
        version: CONFIG_VERSION.into(),
        machine: Machine {
            kind,
            token: token.clone(),
            // Every node signs its own apid certificate for now, so it needs
            // the CA key; a later trust service will issue them instead.
            ca: PemKeyPair::from_pem(&machine_ca.cert_pem, Some(&machine_ca.key_pem)),
            cert_sans: opts.additional_sans.clone(),
            network: Network::default(),
            install: Install {
                disk: opts.install_disk.clone(),
            },
        },
        cluster: Cluster {
            name: name.clone(),
            control_plane: ControlPlane {
                endpoint: opts.endpoint.clone(),
            },
            ca: PemKeyPair::from_pem(
                &kubernetes_ca.cert_pem,
                (kind == MachineType::Controlplane).then_some(kubernetes_ca.key_pem.as_str()),
            ),
            network: ClusterNetwork::default(),
        },
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
        Context::new(endpoints, &machine_ca.cert_pem, &admin),
    );

    Ok(Bundle {
        controlplane: config(MachineType::Controlplane),
        worker: config(MachineType::Worker),
        client,
    })
}

/// The host of `https://HOST:PORT` (IPv6 in brackets), if the URL has that shape.
fn endpoint_host(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?.trim_end_matches('/');
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => {
            let (h, p) = v6.split_once("]:")?;
            (h, p)
        }
        None => rest.rsplit_once(':')?,
    };
    (!host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p != 0))
        .then(|| host.to_owned())
}

/// A bootstrap token in Kubernetes' `[a-z0-9]{6}.[a-z0-9]{16}` shape.
fn token() -> Result<String, GenerateError> {
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
        }
    }

    #[test]
    fn generated_configs_parse_back() {
        let bundle = generate(&opts()).unwrap();
        for config in [&bundle.controlplane, &bundle.worker] {
            let yaml = config.to_yaml().unwrap();
            assert_eq!(&MachineConfig::parse(&yaml, "gen").unwrap(), config);
        }
        assert!(
            bundle.worker.cluster.ca.key.is_none(),
            "workers must not get the Kubernetes CA key"
        );
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
        let t = token().unwrap();
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
            endpoint_host("https://[fd00::1]:6443").as_deref(),
            Some("fd00::1")
        );
    }
}
