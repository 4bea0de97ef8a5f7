//! Certificate signing requests (PKCS#10) for apid's server certificate.
//!
//! apid holds no CA key: it makes its own key, sends a request naming the
//! addresses and names it answers on, and whoever holds the machine CA key
//! (machined on the same node) decides which of those names it signs. The
//! request proves possession of the key (its signature is checked); the
//! names in it are only a wish.

use std::net::IpAddr;

use rcgen::{CertificateSigningRequestParams, SanType};

use crate::{Authority, PkiError, ServerKey, keys, server_params};

/// The largest request accepted: a P-256 request with a few hundred names
/// is a few KiB; anything larger is not from apid.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

impl ServerKey {
    /// A signing request for this key, asking for a server certificate
    /// valid for `names` (IP addresses as IP SANs, the rest as DNS SANs).
    pub fn request(&self, common_name: &str, names: &[String]) -> Result<String, PkiError> {
        let csr = server_params(common_name, names)?
            .serialize_request(&self.0)
            .map_err(|source| PkiError::Sign {
                what: "request",
                source,
            })?;
        csr.pem().map_err(|source| PkiError::Sign {
            what: "request",
            source,
        })
    }

    /// The key as PEM (PKCS#8 v1), for the TLS configuration that serves
    /// the certificate issued for it.
    pub fn to_pem(&self) -> String {
        keys::to_pem(&self.0)
    }
}

/// A signing request whose signature was checked.
pub struct ServerRequest(CertificateSigningRequestParams);

impl ServerRequest {
    pub fn from_pem(pem: &str) -> Result<Self, PkiError> {
        if pem.len() > MAX_REQUEST_BYTES {
            return Err(PkiError::BadRequest(format!(
                "{} bytes, more than {MAX_REQUEST_BYTES}",
                pem.len()
            )));
        }
        CertificateSigningRequestParams::from_pem(pem)
            .map(Self)
            .map_err(|e| PkiError::BadRequest(e.to_string()))
    }

    /// The names asked for, as text (IP addresses in their usual form).
    pub fn names(&self) -> Vec<String> {
        self.0
            .params
            .subject_alt_names
            .iter()
            .filter_map(|san| match san {
                SanType::DnsName(name) => Some(name.as_str().to_owned()),
                SanType::IpAddress(ip) => Some(ip.to_string()),
                _ => None,
            })
            .collect()
    }
}

impl Authority {
    /// A server certificate (1 year) for the key of `request`, valid for
    /// `names`: the signer's choice, which need not be what was asked.
    /// Returns the certificate as PEM.
    pub fn issue_server_for(
        &self,
        request: &ServerRequest,
        common_name: &str,
        names: &[String],
    ) -> Result<String, PkiError> {
        let mut params = server_params(common_name, names)?;
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&request.0.public_key, &self.issuer)
            .map_err(|source| PkiError::Sign {
                what: "server",
                source,
            })?;
        Ok(cert.pem())
    }
}

/// Keeps the names of `asked` that `allowed` contains, comparing IP
/// addresses by value (`::1` and `0:0::1` are one address) and DNS names
/// without regard to case. Returns (kept, refused).
pub fn filter_names(asked: &[String], allowed: &[String]) -> (Vec<String>, Vec<String>) {
    let same = |a: &str, b: &str| match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(x), Ok(y)) => x == y,
        (Err(_), Err(_)) => a.eq_ignore_ascii_case(b),
        _ => false,
    };
    asked
        .iter()
        .cloned()
        .partition(|name| allowed.iter().any(|a| same(name, a)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate_ca;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_request_is_signed_for_the_names_the_signer_chose() {
        let ca = generate_ca("machine").unwrap();
        let authority = Authority::from_pem(&ca.cert_pem, &ca.key_pem).unwrap();
        let key = ServerKey::generate().unwrap();
        let pem = key
            .request("node", &names(&["node", "10.0.0.5", "evil.example"]))
            .unwrap();
        let request = ServerRequest::from_pem(&pem).unwrap();
        assert_eq!(
            request.names(),
            names(&["node", "10.0.0.5", "evil.example"])
        );
        let cert = authority
            .issue_server_for(&request, "node", &names(&["node", "10.0.0.5"]))
            .unwrap();
        let der = crate::pem_to_der(&cert).unwrap();
        assert!(crate::issued_by(
            &der,
            &crate::pem_to_der(&ca.cert_pem).unwrap()
        ));
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        let sans = parsed.subject_alternative_name().unwrap().unwrap().value;
        let shown: Vec<String> = sans.general_names.iter().map(|n| n.to_string()).collect();
        assert_eq!(shown, ["DNSName(node)", "IPAddress(0a:00:00:05)"]);
        // The certificate is for the key that made the request.
        assert_eq!(
            parsed.public_key().subject_public_key.data.as_ref(),
            key.0.public_key_raw()
        );
    }

    #[test]
    fn a_tampered_or_oversized_request_is_refused() {
        let key = ServerKey::generate().unwrap();
        let pem = key.request("node", &names(&["node"])).unwrap();
        let der = pem::parse(&pem).unwrap();
        let mut bytes = der.contents().to_vec();
        // Flip a byte of the signed part (the subject's common name).
        let at = bytes.windows(4).position(|w| w == b"node").unwrap();
        bytes[at] = b'm';
        let forged = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", bytes));
        assert!(matches!(
            ServerRequest::from_pem(&forged),
            Err(PkiError::BadRequest(_))
        ));
        assert!(matches!(
            ServerRequest::from_pem(&"A".repeat(MAX_REQUEST_BYTES + 1)),
            Err(PkiError::BadRequest(_))
        ));
        assert!(ServerRequest::from_pem("not a request").is_err());
    }

    #[test]
    fn names_are_filtered_by_value() {
        let (kept, refused) = filter_names(
            &names(&["Node", "0:0::1", "10.0.0.5", "10.0.0.6", "other"]),
            &names(&["node", "::1", "10.0.0.5"]),
        );
        assert_eq!(kept, names(&["Node", "0:0::1", "10.0.0.5"]));
        assert_eq!(refused, names(&["10.0.0.6", "other"]));
    }
}
