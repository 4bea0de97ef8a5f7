//! The files `slatectl gen` writes, as another language's TLS stack sees
//! them: the real `openssl` reads every key (OpenSSL 3.0 refuses the PKCS#8
//! v2 Ed25519 keys Slate wrote before) and verifies the client certificate
//! against the CA in the client config.
//!
//! Without openssl on PATH these tests skip, unless `CI=true`: then a
//! missing openssl fails them.
// Test helpers outside #[test] fns: a panic here fails the test that called it.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject as _;
use slate_config::clientconfig::ClientConfig;
use slate_config::generate::Secrets;
use slate_config::{MachineConfig, PemKeyPair};

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

fn run(program: &str, dir: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .current_dir(dir)
        .args(args)
        .env_remove("SLATECONFIG")
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"))
}

/// `program args` succeeded; its stdout.
fn ok(program: &str, dir: &Path, args: &[&str]) -> String {
    let out = run(program, dir, args);
    assert!(
        out.status.success(),
        "{program} {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn slatectl(dir: &Path, args: &[&str]) -> String {
    ok(env!("CARGO_BIN_EXE_slatectl"), dir, args)
}

fn openssl(dir: &Path, args: &[&str]) -> String {
    ok("openssl", dir, args)
}

fn key_der(pem: &str) -> Vec<u8> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .secret_der()
        .to_vec()
}

/// openssl reads `key_pem` (written to `NAME.key`), and it is PKCS#8 v1:
/// a 48-byte Ed25519 key, or (the Kubernetes CAs) an ECDSA P-256 one.
fn check_key(dir: &Path, name: &str, key_pem: &str) {
    let der = key_der(key_pem);
    let ed25519_v1 = der.len() == 48 && der[..5] == [0x30, 0x2e, 0x02, 0x01, 0x00];
    let ecdsa_v1 = der[..6] == [0x30, 0x81, 0x87, 0x02, 0x01, 0x00];
    assert!(
        ed25519_v1 || ecdsa_v1,
        "{name}: not a PKCS#8 v1 Ed25519 or ECDSA key: {:?}",
        &der[..6]
    );
    let file = format!("{name}.key");
    std::fs::write(dir.join(&file), key_pem).unwrap();
    openssl(dir, &["pkey", "-in", &file, "-noout"]);
}

/// The client config's CA, certificate and key as `ca.crt`, `client.crt`
/// and `client.key`, checked with openssl: both certificates read, the key
/// reads and is the certificate's, and the certificate verifies against
/// the CA.
fn check_client_config(dir: &Path, path: &Path) {
    let config = ClientConfig::load(path).unwrap();
    let context = &config.contexts[config.context.as_deref().unwrap()];
    let identity = context.identity().unwrap();
    std::fs::write(dir.join("ca.crt"), context.ca_pem().unwrap()).unwrap();
    std::fs::write(dir.join("client.crt"), &identity.cert_pem).unwrap();
    check_key(dir, "client", &identity.key_pem);
    openssl(dir, &["x509", "-in", "ca.crt", "-noout"]);
    openssl(dir, &["x509", "-in", "client.crt", "-noout"]);
    assert_eq!(
        openssl(dir, &["pkey", "-in", "client.key", "-pubout"]),
        openssl(dir, &["x509", "-in", "client.crt", "-noout", "-pubkey"]),
        "the client key is not the client certificate's"
    );
    let said = openssl(dir, &["verify", "-CAfile", "ca.crt", "client.crt"]);
    assert_eq!(said.trim(), "client.crt: OK");
}

/// The machine, Kubernetes and etcd CA keys of the machine config at
/// `path`, checked with [`check_key`].
fn check_machine_config_keys(dir: &Path, path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let config = MachineConfig::parse(&text, "controlplane.yaml").unwrap();
    let etcd = config.cluster.etcd.ca.as_ref().unwrap();
    for (name, pair) in [
        ("machine-ca", &config.machine.ca),
        ("kubernetes-ca", &config.cluster.ca),
        ("etcd-ca", etcd),
        (
            "front-proxy-ca",
            config.cluster.aggregator_ca.as_ref().unwrap(),
        ),
    ] {
        check_key(dir, name, &pair.key_pem().unwrap().unwrap());
    }
    let sa = config.cluster.service_account.as_ref().unwrap();
    check_key(dir, "service-account", &sa.key_pem().unwrap());
}

#[test]
fn openssl_reads_the_keys_and_verifies_the_certificates_gen_config_writes() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    slatectl(
        dir,
        &["gen", "config", "demo", "https://10.0.0.1:6443", "-o", "."],
    );
    check_client_config(dir, &dir.join("slateconfig"));

    check_machine_config_keys(dir, &dir.join("controlplane.yaml"));

    slatectl(dir, &["gen", "secrets", "-o", "secrets.yaml"]);
    let text = std::fs::read_to_string(dir.join("secrets.yaml")).unwrap();
    let secrets = Secrets::parse(&text, "secrets.yaml").unwrap();
    for (name, pair) in [
        ("os", &secrets.certs.os),
        ("k8s", &secrets.certs.k8s),
        ("etcd", &secrets.certs.etcd),
        ("aggregator", &secrets.certs.aggregator),
    ] {
        check_key(dir, name, &pair.key_pem().unwrap().unwrap());
    }
    let sa = secrets.certs.service_account.key_pem().unwrap();
    check_key(dir, "service-account", &sa);
}

/// A `secrets.yaml` from before keys were v1 holds ring's PKCS#8 v2 CA
/// keys: `gen config --with-secrets` still reads it, and the client config
/// it writes is one openssl takes.
#[test]
fn gen_config_reads_secrets_with_v2_keys_written_before() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    slatectl(dir, &["gen", "secrets", "-o", "secrets.yaml"]);
    let text = std::fs::read_to_string(dir.join("secrets.yaml")).unwrap();
    let mut secrets = Secrets::parse(&text, "secrets.yaml").unwrap();
    // The Ed25519 CAs (the Kubernetes ones are ECDSA, which ring
    // always wrote as v1).
    for pair in [&mut secrets.certs.os, &mut secrets.certs.etcd] {
        let v2 = as_v2(dir, &pair.key_pem().unwrap().unwrap());
        *pair = PemKeyPair::from_pem(&pair.crt_pem().unwrap(), Some(&v2));
    }
    std::fs::write(dir.join("old-secrets.yaml"), secrets.to_yaml().unwrap()).unwrap();

    slatectl(
        dir,
        &[
            "gen",
            "config",
            "demo",
            "https://10.0.0.1:6443",
            "--with-secrets",
            "old-secrets.yaml",
            "-o",
            "out",
        ],
    );
    check_client_config(dir, &dir.join("out/slateconfig"));
    // The CA keys in the machine config are v1 again.
    check_machine_config_keys(dir, &dir.join("out/controlplane.yaml"));
}

/// The v1 Ed25519 key `v1_pem` as ring's PKCS#8 v2 (what `slatectl gen`
/// wrote before): `version 1`, the seed, then the public key as
/// `[1] IMPLICIT BIT STRING`. openssl gives the public key and the PEM
/// armour, since it is here anyway.
fn as_v2(dir: &Path, v1_pem: &str) -> String {
    let v1 = key_der(v1_pem);
    std::fs::write(dir.join("v1.key"), v1_pem).unwrap();
    openssl(
        dir,
        &[
            "pkey", "-in", "v1.key", "-pubout", "-outform", "DER", "-out", "v1.pub",
        ],
    );
    let spki = std::fs::read(dir.join("v1.pub")).unwrap();
    let mut der = vec![0x30, 0x51, 0x02, 0x01, 0x01];
    der.extend_from_slice(&v1[5..48]);
    der.extend_from_slice(&[0x81, 0x21, 0x00]);
    der.extend_from_slice(&spki[spki.len() - 32..]);
    std::fs::write(dir.join("v2.der"), &der).unwrap();
    let b64 = openssl(dir, &["base64", "-in", "v2.der"]);
    format!("-----BEGIN PRIVATE KEY-----\n{b64}-----END PRIVATE KEY-----\n")
}
