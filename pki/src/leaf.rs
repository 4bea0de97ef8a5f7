//! Certificates of any shape a CA issues for other software (Kubernetes'
//! components): subject, SANs and purposes given by the caller, an ECDSA
//! P-256 key, and the key usages kubeadm gives its own.

use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyUsagePurpose};
use time::OffsetDateTime;

use crate::{Authority, CertAndKey, PkiError, keys};

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// TLS server (`serverAuth`).
    Server,
    /// TLS client (`clientAuth`).
    Client,
}

/// A leaf certificate to issue.
#[derive(Debug, Clone)]
pub struct Leaf<'a> {
    pub common_name: &'a str,
    /// Subject Organizations (Kubernetes reads them as groups).
    pub organizations: &'a [&'a str],
    /// DNS names and IP addresses (for servers).
    pub names: &'a [String],
    pub purposes: &'a [Purpose],
    /// Validity in days.
    pub days: i64,
}

impl Authority {
    /// Issues `leaf` with a fresh ECDSA P-256 key. Key usages are
    /// digitalSignature and keyEncipherment, as kubeadm sets them for
    /// every certificate it makes.
    pub fn issue_leaf(&self, leaf: &Leaf<'_>) -> Result<CertAndKey, PkiError> {
        let mut params = if leaf.names.is_empty() {
            CertificateParams::default()
        } else {
            crate::server_params(leaf.common_name, leaf.names)?
        };
        let mut dn = rcgen::DistinguishedName::new();
        for o in leaf.organizations {
            dn.push(rcgen::DnType::OrganizationName, *o);
        }
        dn.push(rcgen::DnType::CommonName, leaf.common_name);
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = leaf
            .purposes
            .iter()
            .map(|p| match p {
                Purpose::Server => ExtendedKeyUsagePurpose::ServerAuth,
                Purpose::Client => ExtendedKeyUsagePurpose::ClientAuth,
            })
            .collect();
        (params.not_before, params.not_after) = crate::validity(leaf.days);
        self.sign_new_key(params, &rcgen::PKCS_ECDSA_P256_SHA256, "leaf")
    }
}

/// A new ECDSA P-256 signing key (the service-account token key): its
/// private key (PKCS#8 PEM) and public key (SPKI PEM).
pub fn generate_signing_key() -> Result<(String, String), PkiError> {
    let key = crate::generate(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    Ok((keys::to_pem(&key), key.public_key_pem()))
}

/// The public key (SPKI PEM) of a private key PEM.
pub fn public_key_pem(private_pem: &str) -> Result<String, PkiError> {
    let key = rcgen::KeyPair::from_pem(private_pem).map_err(PkiError::ParseKey)?;
    Ok(key.public_key_pem())
}

/// When a PEM certificate expires.
pub fn not_after(cert_pem: &str) -> Result<OffsetDateTime, PkiError> {
    let der = crate::pem_to_der(cert_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| PkiError::ParseCert(e.to_string()))?;
    Ok(cert.validity().not_after.to_datetime())
}

/// The DNS names and IP addresses (as text) a PEM certificate is valid for.
pub fn names_of(cert_pem: &str) -> Result<Vec<String>, PkiError> {
    use x509_parser::extensions::GeneralName;
    let der = crate::pem_to_der(cert_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| PkiError::ParseCert(e.to_string()))?;
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Ok(Vec::new());
    };
    Ok(san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some((*d).to_owned()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect())
}
