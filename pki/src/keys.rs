//! Private keys as PEM files that other tools read.
//!
//! `ring` writes an Ed25519 key as PKCS#8 v2 (RFC 5958: version 1 with the
//! public key appended). OpenSSL 3.0 (`openssl pkey`) and BoringSSL (so
//! Python's `grpcio`) refuse that form, and a client config nobody else can
//! load keeps the API to slatectl alone. So every Ed25519 key Slate writes
//! is PKCS#8 v1 (RFC 5208, in the form RFC 8410 §7 gives for Ed25519), which
//! every TLS stack reads; ring, rcgen and rustls read both forms, so keys
//! written before this change still load. ECDSA keys are already v1.
//!
//! The conversion is written here rather than taken from the `pkcs8` crate:
//! for Ed25519 both forms are fixed byte layouts around the 32-byte seed,
//! and the `der`/`pkcs8` stack is not otherwise in the image.

use rcgen::KeyPair;

/// `SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING {
/// OCTET STRING (32) } }`: the head of a v1 Ed25519 key, the seed follows
/// (RFC 8410 §7).
const V1_HEAD: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// The same head as ring writes it in v2: a longer SEQUENCE, INTEGER 1;
/// the seed follows, then the public key as `[1] IMPLICIT BIT STRING`.
const V2_HEAD: [u8; 16] = [
    0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
const SEED_LEN: usize = 32;
/// Length of a whole v1 Ed25519 key.
pub const ED25519_V1_LEN: usize = V1_HEAD.len() + SEED_LEN;

/// `key` as a `PRIVATE KEY` PEM block in PKCS#8 v1.
pub fn to_pem(key: &KeyPair) -> String {
    let der = key.serialized_der();
    let der = ed25519_v1(der).unwrap_or_else(|| der.to_vec());
    pem::encode_config(
        &pem::Pem::new("PRIVATE KEY", der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// `pem_text` with an Ed25519 PKCS#8 v2 key re-encoded as v1 (keys that
/// Slate wrote before it wrote v1, kept in old `secrets.yaml` files); any
/// other text is returned as it is.
pub fn to_v1_pem(pem_text: &str) -> String {
    let Ok(block) = pem::parse(pem_text) else {
        return pem_text.to_owned();
    };
    match (block.tag(), ed25519_v1(block.contents())) {
        ("PRIVATE KEY", Some(der)) => pem::encode_config(
            &pem::Pem::new("PRIVATE KEY", der),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        ),
        _ => pem_text.to_owned(),
    }
}

/// A v2 Ed25519 key (`ring`'s form) in v1; `None` for anything else, which
/// is written as it is.
fn ed25519_v1(der: &[u8]) -> Option<Vec<u8>> {
    let seed = der.strip_prefix(&V2_HEAD)?.get(..SEED_LEN)?;
    let mut out = Vec::with_capacity(ED25519_V1_LEN);
    out.extend_from_slice(&V1_HEAD);
    out.extend_from_slice(seed);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    fn der_of(pem_text: &str) -> Vec<u8> {
        pem::parse(pem_text).unwrap().into_contents()
    }

    #[test]
    fn ed25519_keys_are_written_as_v1_and_read_back() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let text = to_pem(&key);
        let der = der_of(&text);
        assert_eq!(der.len(), ED25519_V1_LEN);
        assert_eq!(der[..V1_HEAD.len()], V1_HEAD);
        let back = KeyPair::from_pem(&text).unwrap();
        assert_eq!(back.public_key_raw(), key.public_key_raw());
    }

    #[test]
    fn a_v2_key_written_before_still_loads() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let old = key.serialize_pem();
        assert_eq!(der_of(&old)[..V2_HEAD.len()], V2_HEAD, "ring's form");
        let back = KeyPair::from_pem(&old).unwrap();
        assert_eq!(back.public_key_raw(), key.public_key_raw());
    }

    #[test]
    fn ecdsa_keys_are_left_as_they_are() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        assert_eq!(der_of(&to_pem(&key)), key.serialized_der());
    }

    /// `openssl pkey` on `pem_text`: whether OpenSSL reads it, and what it
    /// said.
    fn openssl_reads(dir: &Path, name: &str, pem_text: &str) -> (bool, String) {
        let path = dir.join(name);
        std::fs::write(&path, pem_text).unwrap();
        let out = Command::new("openssl")
            .args(["pkey", "-noout", "-in"])
            .arg(&path)
            .output()
            .expect("running openssl (the Debian package openssl; make deps)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Every kind of key Slate writes, as written: the machine CA's, a
    /// client config's, apid's server key, etcd's member and client keys.
    #[test]
    fn openssl_reads_every_key_slate_writes() {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::generate_ca("slate").unwrap();
        let authority = crate::Authority::from_pem(&ca.cert_pem, &ca.key_pem).unwrap();
        let server_key = crate::ServerKey::generate().unwrap();
        let keys = [
            ("ca.key", ca.key_pem.clone()),
            (
                "client.key",
                authority
                    .issue_client("admin", crate::Role::Admin)
                    .unwrap()
                    .key_pem,
            ),
            (
                "server.key",
                authority
                    .issue_server(&server_key, "node", &["10.0.0.1".into()])
                    .unwrap()
                    .key_pem,
            ),
            (
                "etcd-member.key",
                authority
                    .issue_etcd_member("node", &["10.0.0.1".into()])
                    .unwrap()
                    .key_pem,
            ),
            (
                "etcd-client.key",
                authority.issue_etcd_client("machined").unwrap().key_pem,
            ),
        ];
        for (name, pem_text) in &keys {
            let (ok, said) = openssl_reads(dir.path(), name, pem_text);
            assert!(ok, "openssl pkey refused {name}: {said}");
        }
    }
}
