//! The Kubernetes PKI and kubeconfigs of a control-plane node, as the real
//! `openssl` and `kubectl` see them: every certificate verifies against
//! its CA, the API server's passes `-checkhost`/`-checkip` for each name,
//! subjects and key usages are those of the table in docs/kubernetes.md
//! (read from that file), and kubectl reads every kubeconfig with the
//! right server, CA and user.
//!
//! Without openssl or kubectl these tests skip, unless `CI=true`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use slate_config::MachineConfig;
use slate_k8s::layout::Layout;
use slate_k8s::pki::{self, NodeNames};

fn tools() -> bool {
    match slate_testskip::unless_installed(&["openssl", "kubectl"]) {
        Some(why) => {
            slate_testskip::skip("Kubernetes PKI tests", why);
            false
        }
        None => true,
    }
}

fn config() -> MachineConfig {
    let mut c = slate_config::generate::generate(&slate_config::generate::Options {
        cluster_name: "prod".into(),
        endpoint: "https://api.prod.example:6443".into(),
        ..Default::default()
    })
    .unwrap()
    .controlplane;
    c.cluster.api_server.cert_sans = vec!["k8s.example.org".into(), "203.0.113.7".into()];
    c
}

fn node() -> NodeNames {
    NodeNames {
        hostname: "cp-1".into(),
        addresses: vec!["10.5.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
    }
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl").args(args).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The rows of the PKI table of docs/kubernetes.md.
fn table() -> Vec<[String; 5]> {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/kubernetes.md"),
    )
    .unwrap();
    let rows: Vec<[String; 5]> = doc
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<String> = l
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('`').to_owned())
                .collect();
            cells.try_into().unwrap()
        })
        .collect();
    assert!(rows.len() >= 7, "docs/kubernetes.md lost its PKI table");
    rows
}

struct Issued {
    _dir: tempfile::TempDir,
    layout: Layout,
    config: MachineConfig,
    cas: BTreeMap<&'static str, PathBuf>,
}

fn issue() -> Issued {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::under(dir.path());
    let config = config();
    let issued = pki::issue_all(&config, &node()).unwrap();
    pki::write(&layout, &issued).unwrap();
    let ca_file = |name: &str, pem: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let c = &config.cluster;
    let cas = BTreeMap::from([
        ("cluster CA", ca_file("ca.pem", c.ca.crt_pem().unwrap())),
        (
            "etcd CA",
            ca_file("etcd.pem", c.etcd.ca.as_ref().unwrap().crt_pem().unwrap()),
        ),
        (
            "front-proxy CA",
            ca_file(
                "fp.pem",
                c.aggregator_ca.as_ref().unwrap().crt_pem().unwrap(),
            ),
        ),
    ]);
    Issued {
        _dir: dir,
        layout,
        config,
        cas,
    }
}

/// kubectl's view of a kubeconfig, and its client certificate as a file.
fn kubeconfig_cert(kubeconfig: &Path, out: &Path, issued: &Issued) -> PathBuf {
    let run = Command::new("kubectl")
        .args(["config", "view", "--raw", "-o", "json", "--kubeconfig"])
        .arg(kubeconfig)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "kubectl cannot read {}: {}",
        kubeconfig.display(),
        String::from_utf8_lossy(&run.stderr)
    );
    let view: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let b64 = |v: &serde_json::Value| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    let cluster = &view["clusters"][0]["cluster"];
    assert_eq!(cluster["server"], "https://127.0.0.1:6443");
    assert_eq!(
        b64(&cluster["certificate-authority-data"]),
        issued.config.cluster.ca.crt_pem().unwrap()
    );
    let current = view["current-context"].as_str().unwrap();
    let context = view["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == current)
        .expect("current context exists");
    let user = view["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == context["context"]["user"])
        .expect("the context's user exists");
    assert!(b64(&user["user"]["client-key-data"]).contains("PRIVATE KEY"));
    std::fs::write(out, b64(&user["user"]["client-certificate-data"])).unwrap();
    out.to_owned()
}

#[test]
fn every_certificate_is_as_the_table_says() {
    if !tools() {
        return;
    }
    let issued = issue();
    let scratch = tempfile::tempdir().unwrap();
    for [file, subject, issuer, usage, eku] in table() {
        let path = issued.layout.secrets.join(&file);
        assert!(path.is_file(), "{file} was not written");
        let cert = if file.ends_with("kubeconfig") {
            kubeconfig_cert(&path, &scratch.path().join("client.crt"), &issued)
        } else {
            path
        };
        let cert = cert.to_str().unwrap();
        let ca = issued.cas[issuer.as_str()].to_str().unwrap();
        let (ok, text) = openssl(&["verify", "-CAfile", ca, cert]);
        assert!(
            ok && text.contains(": OK"),
            "{file} against {issuer}: {text}"
        );
        let (_, text) = openssl(&[
            "x509",
            "-in",
            cert,
            "-noout",
            "-subject",
            "-nameopt",
            "compat",
            "-ext",
            "keyUsage,extendedKeyUsage",
        ]);
        let want_subject = subject.replace(", ", "/");
        assert!(
            text.contains(&format!("subject=/{want_subject}"))
                || text.contains(&format!("subject={subject}")),
            "{file}: subject is not {subject}: {text}"
        );
        assert!(text.contains(&usage), "{file}: key usage {usage}: {text}");
        assert!(text.contains(&eku), "{file}: EKU {eku}: {text}");
    }
}

#[test]
fn the_api_servers_certificate_answers_to_every_name() {
    if !tools() {
        return;
    }
    let issued = issue();
    let cert = issued
        .layout
        .component(pki::API_SERVER)
        .join("apiserver.crt");
    let cert = cert.to_str().unwrap();
    let names = pki::api_server_names(&issued.config, &node()).unwrap();
    for must in [
        "api.prod.example",
        "cp-1",
        "10.5.0.2",
        "fd00::2",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "10.96.0.1",
        "127.0.0.1",
        "localhost",
        "k8s.example.org",
        "203.0.113.7",
    ] {
        assert!(names.iter().any(|n| n == must), "{must} not in {names:?}");
    }
    for name in &names {
        let flag = if name.parse::<std::net::IpAddr>().is_ok() {
            "-checkip"
        } else {
            "-checkhost"
        };
        let (_, text) = openssl(&["x509", "-in", cert, "-noout", flag, name]);
        assert!(text.contains("does match certificate"), "{name}: {text}");
    }
    let (_, text) = openssl(&["x509", "-in", cert, "-noout", "-checkhost", "evil.example"]);
    assert!(text.contains("does NOT match"), "{text}");
}

#[test]
fn keys_are_root_only_and_renewal_follows_names_and_time() {
    use std::os::unix::fs::PermissionsExt as _;
    let issued = issue();
    for dir in [pki::API_SERVER, pki::CONTROLLER_MANAGER, pki::SCHEDULER] {
        let dir = issued.layout.component(dir);
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        for e in std::fs::read_dir(&dir).unwrap() {
            let mode = e.unwrap().metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }
    // The scheduler sees nothing but its kubeconfig; the CA key is the
    // controller-manager's alone.
    let listing = |c: &str| {
        let mut v: Vec<String> = std::fs::read_dir(issued.layout.component(c))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(listing(pki::SCHEDULER), ["kubeconfig"]);
    assert!(listing(pki::CONTROLLER_MANAGER).contains(&"ca.key".to_owned()));
    assert!(!listing(pki::API_SERVER).contains(&"ca.key".to_owned()));

    let names = pki::api_server_names(&issued.config, &node()).unwrap();
    let now = time::OffsetDateTime::now_utc();
    assert!(pki::up_to_date(&issued.layout, &names, now));
    let mut moved = node();
    moved.addresses.push("10.5.0.99".parse().unwrap());
    let new_names = pki::api_server_names(&issued.config, &moved).unwrap();
    assert!(!pki::up_to_date(&issued.layout, &new_names, now));
    assert!(!pki::up_to_date(
        &issued.layout,
        &names,
        now + time::Duration::days(340)
    ));
}

#[test]
fn a_config_without_the_front_proxy_ca_is_named() {
    let mut c = config();
    c.cluster.aggregator_ca = None;
    let err = pki::issue_all(&c, &node()).unwrap_err().to_string();
    assert!(err.starts_with("cluster.aggregatorCA: is missing"), "{err}");
    let mut c = config();
    c.cluster.service_account = None;
    let err = pki::issue_all(&c, &node()).unwrap_err().to_string();
    assert!(
        err.starts_with("cluster.serviceAccount: is missing"),
        "{err}"
    );
}
