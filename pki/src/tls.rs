//! rustls configurations for apid and its clients. One crypto provider
//! (ring) everywhere, passed explicitly so nothing depends on a process-wide
//! default being installed.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::{WantsServerCert, WebPkiClientVerifier};
use rustls::{
    ClientConfig, ConfigBuilder, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme, WantsVerifier,
};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::CertAndKey;

/// gRPC runs over HTTP/2 only.
const ALPN_H2: &[u8] = b"h2";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading the {what} PEM")]
    Pem {
        what: &'static str,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("the {0} PEM holds no certificate")]
    NoCertificate(&'static str),
    #[error("adding the CA certificate to the trust store")]
    TrustStore(#[source] rustls::Error),
    #[error("building the client certificate verifier")]
    ClientVerifier(#[source] rustls::server::VerifierBuilderError),
    #[error("setting up TLS")]
    Config(#[source] rustls::Error),
    #[error("{0:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed)")]
    Fingerprint(String),
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(what: &'static str, pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem { what, source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(what));
    }
    Ok(certs)
}

fn key(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|source| TlsError::Pem {
        what: "private key",
        source,
    })
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certs("CA", ca_pem)? {
        store.add(cert).map_err(TlsError::TrustStore)?;
    }
    Ok(Arc::new(store))
}

/// apid with a machine CA: clients must present a certificate issued by it.
pub fn server_mtls(identity: &CertAndKey, ca_pem: &str) -> Result<ServerConfig, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider())
        .build()
        .map_err(TlsError::ClientVerifier)?;
    server(identity, |b| b.with_client_cert_verifier(verifier))
}

/// apid in maintenance mode: no CA to check clients against, so no client
/// certificates; the handlers allow only calls that are safe without one.
pub fn server_anonymous(identity: &CertAndKey) -> Result<ServerConfig, TlsError> {
    server(identity, |b| b.with_no_client_auth())
}

/// A server config presenting `identity`, speaking h2, with the client
/// authentication that `clients` chooses.
fn server(
    identity: &CertAndKey,
    clients: impl FnOnce(
        ConfigBuilder<ServerConfig, WantsVerifier>,
    ) -> ConfigBuilder<ServerConfig, WantsServerCert>,
) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?;
    let mut config = clients(builder)
        .with_single_cert(
            certs("server", &identity.cert_pem)?,
            key(&identity.key_pem)?,
        )
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// A client that trusts only `ca_pem` and, when given, presents `identity`.
pub fn client(ca_pem: &str, identity: Option<&CertAndKey>) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(roots(ca_pem)?);
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(certs("client", &id.cert_pem)?, key(&id.key_pem)?)
            .map_err(TlsError::Config)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// A client that does not verify the server (`--insecure`), for nodes in
/// safe or maintenance mode, which have no certificate a client could know.
/// The handshake signature is still checked, so the session is bound to the
/// key of the certificate the server showed.
pub fn client_insecure() -> Result<ClientConfig, TlsError> {
    client_unverified(None)
}

/// A client for a node in maintenance mode that trusts exactly one server
/// certificate: the one whose SHA-256 [`crate::fingerprint`] the node
/// printed on its console. Anyone else answering is refused before a
/// config (and its secrets) is sent.
pub fn client_pinned(fingerprint: &str) -> Result<ClientConfig, TlsError> {
    client_unverified(Some(parse_fingerprint(fingerprint)?))
}

/// `AB:CD:…` as the console prints it, or the bare hex, either case, with
/// an optional `sha256:` in front.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], TlsError> {
    let bad = || TlsError::Fingerprint(text.to_owned());
    let trimmed = text.trim();
    let hex = trimmed
        .strip_prefix("sha256:")
        .or_else(|| trimmed.strip_prefix("SHA256:"))
        .unwrap_or(trimmed)
        .replace(':', "");
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(out)
}

fn client_unverified(pin: Option<[u8; 32]>) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let verifier = AnyServerCert {
        algorithms: provider.signature_verification_algorithms,
        pin,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// A client for a node that knows only the SHA-256 of the CA certificate
/// (DER) from its join URL, as kubeadm's discovery by CA hash: the server
/// sends the CA with its chain; the one with that digest becomes the only
/// root, and the server certificate is checked against it as usual (chain,
/// validity, the name dialled). A certificate of another CA, or of this
/// CA for another name, is refused before anything is sent.
pub fn client_ca_pinned(ca_sha256: [u8; 32]) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let verifier = PinnedCa {
        provider: provider.clone(),
        ca_sha256,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

#[derive(Debug)]
struct PinnedCa {
    provider: Arc<CryptoProvider>,
    ca_sha256: [u8; 32],
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| ring::digest::digest(&ring::digest::SHA256, c).as_ref() == self.ca_sha256)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the server did not show the CA of the join URL's digest".into(),
                )
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        webpki.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Accepts any server certificate, or with `pin` only the one of that
/// SHA-256 digest; handshake signatures are checked either way.
#[derive(Debug)]
struct AnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
    pin: Option<[u8; 32]>,
}

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(pin) = &self.pin {
            let digest = ring::digest::digest(&ring::digest::SHA256, end_entity);
            if digest.as_ref() != pin {
                return Err(rustls::Error::General(format!(
                    "the node's certificate fingerprint is {}, not the one given with \
                     --cert-fingerprint: not sending anything to it",
                    crate::fingerprint(end_entity)
                )));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
