//! What another TLS stack makes of the keys and certificates Slate writes:
//! the real `openssl` (OpenSSL 3.0 refuses the PKCS#8 v2 Ed25519 keys that
//! ring writes, as does BoringSSL under Python's grpcio), and rustls
//! handshakes with keys written before the switch to v1.
//!
//! Without openssl on PATH these tests skip, unless `CI=true`: then a
//! missing openssl fails them, so CI cannot pass without having run them.
// Test helpers outside #[test] fns: a panic here fails the test that called it.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{PrivateKeyDer, ServerName};
use slate_pki::{Authority, CertAndKey, Role, ServerKey, tls};

/// The head of a PKCS#8 v1 Ed25519 key (RFC 8410 §7); the 32-byte seed
/// follows.
const V1_HEAD: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Whether openssl can be run; see the module comment (the skip policy is
/// slate-testskip's).
fn have_openssl() -> bool {
    match slate_testskip::unless_installed(&["openssl"]) {
        Some(why) => {
            slate_testskip::skip("openssl tests", why);
            false
        }
        None => true,
    }
}

fn openssl(dir: &Path, args: &[&str]) -> Output {
    Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("running openssl")
}

/// openssl `args` succeeded; its stdout.
fn openssl_ok(dir: &Path, args: &[&str]) -> String {
    let out = openssl(dir, args);
    assert!(
        out.status.success(),
        "openssl {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn key_der(pem: &str) -> Vec<u8> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .secret_der()
        .to_vec()
}

/// The v1 Ed25519 key `v1_pem` as ring's PKCS#8 v2, the form Slate wrote
/// before: `version 1`, the seed, then `[1] IMPLICIT BIT STRING` public key.
fn as_v2(v1_pem: &str) -> String {
    let v1 = key_der(v1_pem);
    assert_eq!(v1.len(), 48, "a v1 Ed25519 key");
    let public = rcgen::KeyPair::from_pem(v1_pem)
        .unwrap()
        .public_key_raw()
        .to_vec();
    let mut der = vec![0x30, 0x51, 0x02, 0x01, 0x01];
    der.extend_from_slice(&v1[5..]);
    der.extend_from_slice(&[0x81, 0x21, 0x00]);
    der.extend_from_slice(&public);
    pem_text(&der)
}

fn pem_text(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("PRIVATE KEY", der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Writes `pair` as `NAME.crt` and `NAME.key` and checks with openssl
/// that the key reads, the certificate reads, and the key is the
/// certificate's.
fn check_pair(dir: &Path, name: &str, pair: &CertAndKey) {
    let (crt, key) = (format!("{name}.crt"), format!("{name}.key"));
    std::fs::write(dir.join(&crt), &pair.cert_pem).unwrap();
    std::fs::write(dir.join(&key), &pair.key_pem).unwrap();
    openssl_ok(dir, &["pkey", "-in", &key, "-noout"]);
    openssl_ok(dir, &["x509", "-in", &crt, "-noout"]);
    assert_eq!(
        openssl_ok(dir, &["pkey", "-in", &key, "-pubout"]),
        openssl_ok(dir, &["x509", "-in", &crt, "-noout", "-pubkey"]),
        "{name}: the key is not the certificate's"
    );
}

/// `NAME.crt` verifies against `ca.crt`.
fn check_chain(dir: &Path, name: &str) {
    let crt = format!("{name}.crt");
    let said = openssl_ok(dir, &["verify", "-CAfile", "ca.crt", &crt]);
    assert_eq!(said.trim(), format!("{crt}: OK"));
}

#[test]
fn openssl_reads_every_key_and_verifies_every_chain_slate_writes() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let ca = slate_pki::generate_ca("slate machine CA").unwrap();
    let authority = Authority::from_pem(&ca.cert_pem, &ca.key_pem).unwrap();
    let server_key = ServerKey::generate().unwrap();
    let names = ["10.0.0.1".to_string(), "node-1".to_string()];
    let issued = [
        (
            "client",
            authority.issue_client("admin", Role::Admin).unwrap(),
            true,
        ),
        (
            "server",
            authority
                .issue_server(&server_key, "node-1", &names)
                .unwrap(),
            false,
        ),
        (
            "etcd-member",
            authority.issue_etcd_member("node-1", &names).unwrap(),
            false,
        ),
        (
            "etcd-client",
            authority.issue_etcd_client("machined").unwrap(),
            true,
        ),
    ];

    assert_eq!(key_der(&ca.key_pem)[..16], V1_HEAD, "the CA key is v1");
    check_pair(dir, "ca", &ca);
    for (name, pair, ed25519) in &issued {
        if *ed25519 {
            let der = key_der(&pair.key_pem);
            assert_eq!(der.len(), 48, "{name}: a v1 Ed25519 key is 48 bytes");
            assert_eq!(der[..16], V1_HEAD, "{name}: v1");
        }
        check_pair(dir, name, pair);
        check_chain(dir, name);
    }

    let maintenance = slate_pki::self_signed_server(&server_key, "node-1", &names).unwrap();
    check_pair(dir, "maintenance", &maintenance);
}

#[test]
fn a_v2_key_written_the_old_way_is_still_read() {
    let fresh = slate_pki::generate_ca("old CA").unwrap();
    let old_ca = CertAndKey {
        cert_pem: fresh.cert_pem.clone(),
        key_pem: as_v2(&fresh.key_pem),
    };
    // as_v2 makes exactly the form Slate wrote before (rcgen's
    // serialize_pem of a ring-generated key).
    let ring_v2 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .unwrap()
        .serialize_pem();
    let (ours, ring) = (key_der(&old_ca.key_pem), key_der(&ring_v2));
    assert_eq!((ours.len(), &ours[..16]), (ring.len(), &ring[..16]));
    assert_eq!(ours[48..51], ring[48..51]);

    // The old CA key still signs, and what it signs is written as v1.
    let authority = Authority::from_pem(&old_ca.cert_pem, &old_ca.key_pem).unwrap();
    let client = authority.issue_client("admin", Role::Admin).unwrap();
    assert_eq!(key_der(&client.key_pem).len(), 48);
    // Re-encoding an old key gives the v1 of the same key.
    let again = slate_pki::keys::to_pem(&rcgen::KeyPair::from_pem(&old_ca.key_pem).unwrap());
    assert_eq!(again, fresh.key_pem);

    if have_openssl() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        std::fs::write(dir.join("old.key"), &old_ca.key_pem).unwrap();
        let out = openssl(dir, &["pkey", "-in", "old.key", "-noout"]);
        // Not asserted: a later OpenSSL may read v2. Shown for the record.
        eprintln!(
            "openssl pkey on a v2 key: {}, {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        check_pair(dir, "ca", &fresh);
        check_pair(dir, "client", &client);
        check_chain(dir, "client");
    }

    // rustls reads the v2 client key and the handshake completes; the
    // server sees the client's role.
    let old_client = CertAndKey {
        key_pem: as_v2(&client.key_pem),
        ..client.clone()
    };
    for (what, identity) in [("v1", &client), ("v2", &old_client)] {
        let role = mtls_handshake(&authority, &old_ca.cert_pem, identity)
            .unwrap_or_else(|e| panic!("{what} client key: {e}"));
        assert_eq!(role, Role::Admin, "{what}");
    }
}

/// An mTLS handshake in memory between apid's server config (a server
/// certificate of `authority`) and a client presenting `identity`; the
/// role the server saw.
fn mtls_handshake(
    authority: &Authority,
    ca_pem: &str,
    identity: &CertAndKey,
) -> Result<Role, String> {
    let key = ServerKey::generate().unwrap();
    let server_id = authority
        .issue_server(&key, "node-1", &["node-1".to_string()])
        .unwrap();
    let server = tls::server_mtls(&server_id, ca_pem).map_err(|e| e.to_string())?;
    let client = tls::client(ca_pem, Some(identity)).map_err(|e| e.to_string())?;
    let mut c =
        rustls::ClientConnection::new(Arc::new(client), ServerName::try_from("node-1").unwrap())
            .map_err(|e| e.to_string())?;
    let mut s = rustls::ServerConnection::new(Arc::new(server)).map_err(|e| e.to_string())?;
    for _ in 0..16 {
        if !c.is_handshaking() && !s.is_handshaking() {
            let der = &s.peer_certificates().ok_or("no client certificate")?[0];
            return slate_pki::role_of(der).map_err(|e| e.to_string());
        }
        let mut wire = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut wire).unwrap();
        }
        let mut rd = &wire[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
            s.process_new_packets()
                .map_err(|e| format!("server: {e}"))?;
        }
        wire.clear();
        while s.wants_write() {
            s.write_tls(&mut wire).unwrap();
        }
        let mut rd = &wire[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
            c.process_new_packets()
                .map_err(|e| format!("client: {e}"))?;
        }
    }
    Err("the handshake did not finish".into())
}
