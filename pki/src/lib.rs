//! Certificates for the API: the machine CA, client certificates that carry
//! a role, and apid's server certificate.
//!
//! Keys: Ed25519 for the CA and clients (small, fast), ECDSA P-256 for the
//! server, which every TLS client supports.
//!
//! [`tls`] builds the rustls configurations for apid and its clients from
//! them.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

pub mod keys;
pub mod leaf;
pub mod request;
pub mod tls;

pub use request::ServerRequest;

/// A role, carried in the Organization of a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read-only access, no secrets.
    Reader,
    /// Reader plus reboot, services and logs; no config, no secrets.
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Operator, Role::Reader];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "os:admin",
            Self::Operator => "os:operator",
            Self::Reader => "os:reader",
        }
    }

    /// Whether a caller holding `self` may call an RPC that requires `needed`.
    /// Roles are ordered: admin ⊃ operator ⊃ reader.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| PkiError::UnknownRole(s.to_owned()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating a key pair")]
    GenerateKey(#[source] rcgen::Error),
    #[error("reading the CA key")]
    ParseKey(#[source] rcgen::Error),
    #[error("reading the CA certificate")]
    ParseCa(#[source] rcgen::Error),
    #[error("the CA certificate is not a CA (no basicConstraints CA:TRUE)")]
    NotACa,
    #[error("signing the {what} certificate")]
    Sign {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("{0:?} is not a valid certificate name")]
    BadName(String),
    #[error("unknown role {0:?} (expected os:admin, os:operator or os:reader)")]
    UnknownRole(String),
    #[error("parsing a certificate: {0}")]
    ParseCert(String),
    #[error("the certificate names no role in its Organization")]
    NoRole,
    #[error("the private key does not belong to the CA certificate")]
    KeyMismatch,
    #[error("reading the certificate signing request: {0}")]
    BadRequest(String),
}

/// A certificate with its private key, both PEM.
#[derive(Clone)]
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for CertAndKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertAndKey")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

fn validity(days: i64) -> (OffsetDateTime, OffsetDateTime) {
    // Backdate a little so a node whose clock is slightly behind (no NTP yet
    // at boot) still accepts a certificate minted just now.
    let now = OffsetDateTime::now_utc();
    (now - Duration::hours(1), now + Duration::days(days))
}

fn generate(alg: &'static rcgen::SignatureAlgorithm) -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(alg).map_err(PkiError::GenerateKey)
}

/// Creates a self-signed CA (Ed25519, 10 years).
pub fn generate_ca(common_name: &str) -> Result<CertAndKey, PkiError> {
    generate_ca_with(common_name, &rcgen::PKCS_ED25519)
}

/// Creates a self-signed ECDSA P-256 CA (10 years): for the Kubernetes
/// CAs, whose clients are not all Go (Java's and older OpenSSL's TLS
/// stacks cannot verify Ed25519), as kubeadm's are RSA or ECDSA.
pub fn generate_ca_ecdsa(common_name: &str) -> Result<CertAndKey, PkiError> {
    generate_ca_with(common_name, &rcgen::PKCS_ECDSA_P256_SHA256)
}

fn generate_ca_with(
    common_name: &str,
    alg: &'static rcgen::SignatureAlgorithm,
) -> Result<CertAndKey, PkiError> {
    let key = generate(alg)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name(common_name, None);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (params.not_before, params.not_after) = validity(3650);
    let cert = params
        .self_signed(&key)
        .map_err(|source| PkiError::Sign { what: "CA", source })?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: keys::to_pem(&key),
    })
}

/// A CA that can issue certificates, loaded from PEM.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
}

impl Authority {
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        // rcgen does not check that the issuer is a CA: do it here, or a
        // leaf certificate pasted as `ca` would sign certificates nobody
        // can verify.
        let der = pem_to_der(cert_pem)?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| PkiError::ParseCert(e.to_string()))?;
        if !cert.is_ca() {
            return Err(PkiError::NotACa);
        }
        let key = KeyPair::from_pem(key_pem).map_err(PkiError::ParseKey)?;
        // Nor does it check that the key belongs to the certificate: a
        // mismatch would sign certificates that fail every verification.
        if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
            return Err(PkiError::KeyMismatch);
        }
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(PkiError::ParseCa)?;
        Ok(Self { issuer })
    }

    /// A client certificate for `role` (Ed25519, 1 year).
    pub fn issue_client(&self, common_name: &str, role: Role) -> Result<CertAndKey, PkiError> {
        self.issue_client_of(common_name, role.as_str(), "client")
    }

    /// The client certificate apid on a control-plane node forwards calls
    /// with: Organization [`IMPERSONATOR`], no [`Role`] of its own. A node
    /// takes the caller's role apid names only from such a certificate
    /// (Ed25519, 1 year).
    pub fn issue_impersonator(&self, common_name: &str) -> Result<CertAndKey, PkiError> {
        self.issue_client_of(common_name, IMPERSONATOR, "impersonator")
    }

    /// A client certificate (Ed25519, 1 year) whose Organization is
    /// `organization`; `what` names it in errors.
    fn issue_client_of(
        &self,
        common_name: &str,
        organization: &str,
        what: &'static str,
    ) -> Result<CertAndKey, PkiError> {
        let key = generate(&rcgen::PKCS_ED25519)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name, Some(organization));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        (params.not_before, params.not_after) = validity(365);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| PkiError::Sign { what, source })?;
        Ok(CertAndKey {
            cert_pem: cert.pem(),
            key_pem: keys::to_pem(&key),
        })
    }

    /// apid's server certificate (1 year) for `key`, valid for `names`:
    /// IP addresses become IP SANs, everything else DNS SANs.
    pub fn issue_server(
        &self,
        key: &ServerKey,
        common_name: &str,
        names: &[String],
    ) -> Result<CertAndKey, PkiError> {
        let key = &key.0;
        let mut params = server_params(common_name, names)?;
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| PkiError::Sign {
                what: "server",
                source,
            })?;
        Ok(CertAndKey {
            cert_pem: cert.pem(),
            key_pem: keys::to_pem(key),
        })
    }
}

impl Authority {
    /// An etcd member's certificate (ECDSA P-256, 1 year): etcd uses one
    /// certificate as the server of its client and peer ports and as the
    /// client when it dials its peers, so it carries both purposes.
    pub fn issue_etcd_member(
        &self,
        common_name: &str,
        names: &[String],
    ) -> Result<CertAndKey, PkiError> {
        let mut params = server_params(common_name, names)?;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.sign_new_key(params, &rcgen::PKCS_ECDSA_P256_SHA256, "etcd member")
    }

    /// A client certificate of the etcd CA (Ed25519, 1 year), for machined
    /// and for `etcdctl` run by people: it can talk to etcd, not serve it.
    pub fn issue_etcd_client(&self, common_name: &str) -> Result<CertAndKey, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name, None);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        (params.not_before, params.not_after) = validity(365);
        self.sign_new_key(params, &rcgen::PKCS_ED25519, "etcd client")
    }

    fn sign_new_key(
        &self,
        mut params: CertificateParams,
        alg: &'static rcgen::SignatureAlgorithm,
        what: &'static str,
    ) -> Result<CertAndKey, PkiError> {
        let key = generate(alg)?;
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| PkiError::Sign { what, source })?;
        Ok(CertAndKey {
            cert_pem: cert.pem(),
            key_pem: keys::to_pem(&key),
        })
    }
}

/// The private key of a server certificate: ECDSA P-256, which every TLS
/// client supports. Separate from issuing so that apid can make it while
/// it still waits for its config.
pub struct ServerKey(KeyPair);

impl ServerKey {
    pub fn generate() -> Result<Self, PkiError> {
        generate(&rcgen::PKCS_ECDSA_P256_SHA256).map(Self)
    }
}

/// A self-signed server certificate for `key`, for maintenance mode where no CA
/// is known.
pub fn self_signed_server(
    key: &ServerKey,
    common_name: &str,
    names: &[String],
) -> Result<CertAndKey, PkiError> {
    let key = &key.0;
    let cert = server_params(common_name, names)?
        .self_signed(&key)
        .map_err(|source| PkiError::Sign {
            what: "self-signed server",
            source,
        })?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: keys::to_pem(key),
    })
}

fn server_params(common_name: &str, names: &[String]) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(common_name, None);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    (params.not_before, params.not_after) = validity(365);
    let mut sans: Vec<SanType> = Vec::new();
    for n in names {
        let san = match n.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                n.clone()
                    .try_into()
                    .map_err(|_| PkiError::BadName(n.clone()))?,
            ),
        };
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    params.subject_alt_names = sans;
    Ok(params)
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

/// The first certificate in a PEM text, as DER.
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>, PkiError> {
    use rustls_pki_types::pem::PemObject as _;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|c| c.to_vec())
        .map_err(|e| PkiError::ParseCert(e.to_string()))
}

/// The role named in a client certificate's Organization. With several
/// Organizations, the strongest known role wins (as in Talos).
pub fn role_of(cert_der: &[u8]) -> Result<Role, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| PkiError::ParseCert(e.to_string()))?;
    cert.subject()
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .filter_map(|o| o.parse::<Role>().ok())
        .max()
        .ok_or(PkiError::NoRole)
}

/// The Organization of the certificate control-plane apids forward calls
/// with (as in Talos): not a role, but the right to name the caller's.
pub const IMPERSONATOR: &str = "os:impersonator";

/// Whether a client certificate's Organizations include [`IMPERSONATOR`].
pub fn is_impersonator(cert_der: &[u8]) -> bool {
    x509_parser::parse_x509_certificate(cert_der).is_ok_and(|(_, cert)| {
        cert.subject()
            .iter_organization()
            .filter_map(|o| o.as_str().ok())
            .any(|o| o == IMPERSONATOR)
    })
}

/// Whether `cert_der` carries a valid signature of the CA `ca_der`. TLS
/// checked this at the handshake; apid checks again per call, because a
/// long-lived connection may outlive the CA it was accepted under.
pub fn issued_by(cert_der: &[u8], ca_der: &[u8]) -> bool {
    let (Ok((_, cert)), Ok((_, ca))) = (
        x509_parser::parse_x509_certificate(cert_der),
        x509_parser::parse_x509_certificate(ca_der),
    ) else {
        return false;
    };
    cert.verify_signature(Some(ca.public_key())).is_ok()
}

/// Whether two secrets (a token shown and the one expected) are equal,
/// compared by their SHA-256 digests so the time taken says nothing of
/// where they differ.
pub fn same_secret(shown: &[u8], expected: &[u8]) -> bool {
    let digest = |b: &[u8]| ring::digest::digest(&ring::digest::SHA256, b);
    digest(shown).as_ref() == digest(expected).as_ref()
}

/// SHA-256 fingerprint of a DER certificate, as colon-separated hex, which
/// is how the console prints it for people to compare.
pub fn fingerprint(cert_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert_der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_with_another_key_is_refused() {
        let a = generate_ca("a").unwrap();
        let b = generate_ca("b").unwrap();
        assert!(Authority::from_pem(&a.cert_pem, &a.key_pem).is_ok());
        assert!(matches!(
            Authority::from_pem(&a.cert_pem, &b.key_pem),
            Err(PkiError::KeyMismatch)
        ));
    }

    #[test]
    fn issued_by_tells_its_ca_from_another() {
        let ca = generate_ca("a").unwrap();
        let other = generate_ca("b").unwrap();
        let client = Authority::from_pem(&ca.cert_pem, &ca.key_pem)
            .unwrap()
            .issue_client("c", Role::Reader)
            .unwrap();
        let der = |pem: &str| pem_to_der(pem).unwrap();
        assert!(issued_by(&der(&client.cert_pem), &der(&ca.cert_pem)));
        assert!(!issued_by(&der(&client.cert_pem), &der(&other.cert_pem)));
        assert!(!issued_by(b"junk", &der(&ca.cert_pem)));
    }

    #[test]
    fn client_certificate_carries_its_role() {
        let ca = generate_ca("test").unwrap();
        let authority = Authority::from_pem(&ca.cert_pem, &ca.key_pem).unwrap();
        for role in Role::ALL {
            let client = authority.issue_client("someone", role).unwrap();
            assert_eq!(
                role_of(&pem_to_der(&client.cert_pem).unwrap()).unwrap(),
                role
            );
        }
    }

    #[test]
    fn an_impersonator_has_no_role_of_its_own() {
        let ca = generate_ca("test").unwrap();
        let authority = Authority::from_pem(&ca.cert_pem, &ca.key_pem).unwrap();
        let proxy = pem_to_der(&authority.issue_impersonator("apid").unwrap().cert_pem).unwrap();
        assert!(is_impersonator(&proxy));
        assert!(matches!(role_of(&proxy), Err(PkiError::NoRole)));
        let admin =
            pem_to_der(&authority.issue_client("a", Role::Admin).unwrap().cert_pem).unwrap();
        assert!(!is_impersonator(&admin));
    }

    #[test]
    fn a_leaf_certificate_cannot_act_as_ca() {
        let ca = generate_ca("test").unwrap();
        let authority = Authority::from_pem(&ca.cert_pem, &ca.key_pem).unwrap();
        let leaf = authority.issue_client("x", Role::Admin).unwrap();
        assert!(matches!(
            Authority::from_pem(&leaf.cert_pem, &leaf.key_pem),
            Err(PkiError::NotACa)
        ));
    }

    #[test]
    fn server_certificate_has_ip_and_dns_names() {
        let ca = generate_ca("test").unwrap();
        let authority = Authority::from_pem(&ca.cert_pem, &ca.key_pem).unwrap();
        let names = vec![
            "10.0.2.15".to_string(),
            "node-1".to_string(),
            "10.0.2.15".to_string(),
        ];
        let key = ServerKey::generate().unwrap();
        let server = authority.issue_server(&key, "node-1", &names).unwrap();
        let der = pem_to_der(&server.cert_pem).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(
            san.general_names.len(),
            2,
            "duplicates are dropped: {:?}",
            san.general_names
        );
    }

    #[test]
    fn an_etcd_member_certificate_serves_and_dials() {
        let ca = generate_ca("etcd").unwrap();
        let authority = Authority::from_pem(&ca.cert_pem, &ca.key_pem).unwrap();
        let names = vec!["10.5.0.2".to_string(), "127.0.0.1".to_string()];
        let member = authority.issue_etcd_member("cp-1", &names).unwrap();
        let der = pem_to_der(&member.cert_pem).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        assert!(issued_by(&der, &pem_to_der(&ca.cert_pem).unwrap()));
        let client = authority.issue_etcd_client("machined").unwrap();
        let der = pem_to_der(&client.cert_pem).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
    }

    #[test]
    fn role_order() {
        assert!(Role::Admin.allows(Role::Reader));
        assert!(Role::Operator.allows(Role::Reader));
        assert!(!Role::Reader.allows(Role::Operator));
        assert!(!Role::Operator.allows(Role::Admin));
        assert!("os:root".parse::<Role>().is_err());
    }
}
