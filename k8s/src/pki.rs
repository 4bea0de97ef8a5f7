//! The Kubernetes PKI of a control-plane node: kubeadm's set of
//! certificates, issued from the config's CAs, one directory per
//! component.
//!
//! | file | subject | issuer | extended key usage |
//! |---|---|---|---|
//! | `kube-apiserver/apiserver.crt` | CN=kube-apiserver | cluster CA | serverAuth |
//! | `kube-apiserver/apiserver-kubelet-client.crt` | CN=kube-apiserver-kubelet-client, O=system:masters | cluster CA | clientAuth |
//! | `kube-apiserver/apiserver-etcd-client.crt` | CN=kube-apiserver-etcd-client | etcd CA | clientAuth |
//! | `kube-apiserver/front-proxy-client.crt` | CN=front-proxy-client | front-proxy CA | clientAuth |
//! | `kube-controller-manager/kubeconfig` | CN=system:kube-controller-manager | cluster CA | clientAuth |
//! | `kube-scheduler/kubeconfig` | CN=system:kube-scheduler | cluster CA | clientAuth |
//! | `admin.kubeconfig` | CN=admin, O=system:masters | cluster CA | clientAuth |
//!
//! Every certificate has an ECDSA P-256 key, key usages digitalSignature
//! and keyEncipherment (as kubeadm's), and is valid for a year; machined
//! issues them anew when the API server's names change or a month before
//! they expire ([`up_to_date`]). The service-account key pair is the
//! config's (`cluster.serviceAccount`), the same on every control-plane
//! node, or tokens signed by one would fail on the others.

use std::net::IpAddr;
use std::path::Path;

use slate_config::{MachineConfig, PemKeyPair};
use slate_pki::leaf::{Leaf, Purpose};
use slate_pki::{Authority, CertAndKey};

use crate::K8sError;
use crate::kubeconfig;
use crate::layout::{API_SERVER_PORT, Layout};

/// Validity of every certificate issued here, as kubeadm's.
pub const VALIDITY_DAYS: i64 = 365;

/// Certificates are issued anew this long before they expire.
pub const RENEW_BEFORE: time::Duration = time::Duration::days(30);

pub const API_SERVER: &str = "kube-apiserver";
pub const CONTROLLER_MANAGER: &str = "kube-controller-manager";
pub const SCHEDULER: &str = "kube-scheduler";

/// What the node contributes to the API server's certificate.
#[derive(Debug, Clone, Default)]
pub struct NodeNames {
    /// The node's host name.
    pub hostname: String,
    /// The node's addresses.
    pub addresses: Vec<IpAddr>,
}

/// One file of a component's directory.
#[derive(Debug, Clone)]
pub struct File {
    pub name: &'static str,
    pub contents: String,
}

/// The files of one component (or of the node itself, `component` "").
#[derive(Debug, Clone)]
pub struct Directory {
    pub component: &'static str,
    pub files: Vec<File>,
}

/// Everything issued for one control-plane node.
#[derive(Debug, Clone)]
pub struct Issued {
    pub directories: Vec<Directory>,
    /// The admin kubeconfig (`admin.kubeconfig`), with which machined
    /// applies the bootstrap manifests.
    pub admin_kubeconfig: String,
}

/// The names the API server's certificate is valid for: the endpoint's
/// host, the node's host name and addresses, the in-cluster names, the
/// `kubernetes` Service's address, loopback and `cluster.apiServer.certSANs`.
pub fn api_server_names(config: &MachineConfig, node: &NodeNames) -> Result<Vec<String>, K8sError> {
    let domain = &config.cluster.network.dns_domain;
    let mut names = Vec::new();
    if let Some(host) = slate_config::endpoint_host(&config.cluster.control_plane.endpoint) {
        names.push(host);
    }
    if !node.hostname.is_empty() {
        names.push(node.hostname.clone());
    }
    names.extend(node.addresses.iter().map(IpAddr::to_string));
    names.extend(["kubernetes", "kubernetes.default", "kubernetes.default.svc"].map(str::to_owned));
    names.push(format!("kubernetes.default.svc.{domain}"));
    names.push(crate::addons::api_service_ip(config)?.to_string());
    names.extend(["127.0.0.1", "::1", "localhost"].map(str::to_owned));
    names.extend(config.cluster.api_server.cert_sans.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    Ok(names)
}

fn pem(field: &str, pair: Option<&PemKeyPair>) -> Result<(String, Option<String>), K8sError> {
    let pair = pair.ok_or_else(|| {
        K8sError::config(field, "is missing: control-plane nodes issue Kubernetes' certificates from it (slatectl gen config makes one)")
    })?;
    let crt = pair
        .crt_pem()
        .map_err(|e| K8sError::config(format!("{field}.crt"), e.to_string()))?;
    let key = pair
        .key_pem()
        .map_err(|e| K8sError::config(format!("{field}.key"), e.to_string()))?;
    Ok((crt, key))
}

/// A CA that can issue, with its certificate's PEM.
struct Ca {
    crt: String,
    key: String,
    authority: Authority,
}

fn authority(field: &str, pair: Option<&PemKeyPair>) -> Result<Ca, K8sError> {
    let (crt, key) = pem(field, pair)?;
    let key = key.ok_or_else(|| {
        K8sError::config(
            format!("{field}.key"),
            "is missing: a control-plane node issues Kubernetes' certificates with it",
        )
    })?;
    let authority =
        Authority::from_pem(&crt, &key).map_err(|e| K8sError::config(field, e.to_string()))?;
    Ok(Ca {
        crt,
        key,
        authority,
    })
}

fn issue(
    ca: &Ca,
    common_name: &str,
    organizations: &[&str],
    names: &[String],
    purpose: Purpose,
) -> Result<CertAndKey, K8sError> {
    Ok(ca.authority.issue_leaf(&Leaf {
        common_name,
        organizations,
        names,
        purposes: &[purpose],
        days: VALIDITY_DAYS,
    })?)
}

/// The API server's address for components on the same node.
pub fn local_api_url() -> String {
    format!("https://127.0.0.1:{API_SERVER_PORT}")
}

/// Issues every certificate and kubeconfig of a control-plane node.
pub fn issue_all(config: &MachineConfig, node: &NodeNames) -> Result<Issued, K8sError> {
    let cluster = &config.cluster;
    let ca = authority("cluster.ca", Some(&cluster.ca))?;
    let etcd = authority("cluster.etcd.ca", cluster.etcd.ca.as_ref())?;
    let front_proxy = authority("cluster.aggregatorCA", cluster.aggregator_ca.as_ref())?;
    let sa_key = cluster
        .service_account
        .as_ref()
        .ok_or_else(|| {
            K8sError::config(
                "cluster.serviceAccount",
                "is missing: the API server signs service-account tokens with it (slatectl gen config makes one)",
            )
        })?
        .key_pem()
        .map_err(|e| K8sError::config("cluster.serviceAccount.key", e.to_string()))?;
    let sa_pub = slate_pki::leaf::public_key_pem(&sa_key)
        .map_err(|e| K8sError::config("cluster.serviceAccount.key", e.to_string()))?;

    let names = api_server_names(config, node)?;
    let server = issue(&ca, "kube-apiserver", &[], &names, Purpose::Server)?;
    let kubelet_client = issue(
        &ca,
        "kube-apiserver-kubelet-client",
        &["system:masters"],
        &[],
        Purpose::Client,
    )?;
    let etcd_client = issue(
        &etcd,
        "kube-apiserver-etcd-client",
        &[],
        &[],
        Purpose::Client,
    )?;
    let proxy_client = issue(
        &front_proxy,
        "front-proxy-client",
        &[],
        &[],
        Purpose::Client,
    )?;

    let local = local_api_url();
    let client_kubeconfig =
        |cn: &str, orgs: &[&str]| client_kubeconfig(&cluster.name, &local, &ca, cn, orgs);
    let file = |name, contents: &str| File {
        name,
        contents: contents.to_owned(),
    };
    let directories = vec![
        Directory {
            component: API_SERVER,
            files: vec![
                file("ca.crt", &ca.crt),
                file("apiserver.crt", &server.cert_pem),
                file("apiserver.key", &server.key_pem),
                file("apiserver-kubelet-client.crt", &kubelet_client.cert_pem),
                file("apiserver-kubelet-client.key", &kubelet_client.key_pem),
                file("etcd-ca.crt", &etcd.crt),
                file("apiserver-etcd-client.crt", &etcd_client.cert_pem),
                file("apiserver-etcd-client.key", &etcd_client.key_pem),
                file("front-proxy-ca.crt", &front_proxy.crt),
                file("front-proxy-client.crt", &proxy_client.cert_pem),
                file("front-proxy-client.key", &proxy_client.key_pem),
                file("sa.pub", &sa_pub),
                file("sa.key", &sa_key),
            ],
        },
        Directory {
            component: CONTROLLER_MANAGER,
            files: vec![
                file("ca.crt", &ca.crt),
                file("ca.key", &ca.key),
                file("front-proxy-ca.crt", &front_proxy.crt),
                file("sa.key", &sa_key),
                file(
                    "kubeconfig",
                    &client_kubeconfig("system:kube-controller-manager", &[])?,
                ),
            ],
        },
        Directory {
            component: SCHEDULER,
            files: vec![file(
                "kubeconfig",
                &client_kubeconfig("system:kube-scheduler", &[])?,
            )],
        },
    ];
    Ok(Issued {
        directories,
        admin_kubeconfig: client_kubeconfig("admin", &["system:masters"])?,
    })
}

/// A kubeconfig for `server` whose user `common_name` (in groups
/// `organizations`) holds a new client certificate of the cluster CA.
fn client_kubeconfig(
    cluster: &str,
    server: &str,
    ca: &Ca,
    common_name: &str,
    organizations: &[&str],
) -> Result<String, K8sError> {
    let id = issue(ca, common_name, organizations, &[], Purpose::Client)?;
    kubeconfig::render(&kubeconfig::with_certificate(
        cluster,
        server,
        &ca.crt,
        common_name,
        &id,
    ))
}

/// An admin kubeconfig (`CN=admin`, `O=system:masters`, one year) for
/// `server`: the node's own (`admin.kubeconfig`, this node's API server)
/// and `slatectl kubeconfig`'s (the cluster's endpoint) alike.
pub fn admin_kubeconfig(config: &MachineConfig, server: &str) -> Result<String, K8sError> {
    let ca = authority("cluster.ca", Some(&config.cluster.ca))?;
    client_kubeconfig(
        &config.cluster.name,
        server,
        &ca,
        "admin",
        &["system:masters"],
    )
}

/// Writes `issued` under `layout`: every file root-only (0600), each
/// atomically, directories 0700.
pub fn write(layout: &Layout, issued: &Issued) -> Result<(), K8sError> {
    let write = |path: &Path, contents: &str| {
        slate_common::fs::write_atomic(path, contents.as_bytes(), 0o600).map_err(K8sError::from)
    };
    for dir in &issued.directories {
        let path = layout.component(dir.component);
        create_private_dir(&path)?;
        for f in &dir.files {
            write(&path.join(f.name), &f.contents)?;
        }
    }
    write(&layout.admin_kubeconfig(), &issued.admin_kubeconfig)
}

fn create_private_dir(path: &Path) -> Result<(), K8sError> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let err = |source| K8sError::Write {
        path: path.display().to_string(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(err)
}

/// Whether the certificates under `layout` can stay: every one is there,
/// the API server's is valid for exactly `names`, and none expires
/// within [`RENEW_BEFORE`] of `now`.
pub fn up_to_date(layout: &Layout, names: &[String], now: time::OffsetDateTime) -> bool {
    let dir = layout.component(API_SERVER);
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let Some(server) = read("apiserver.crt") else {
        return false;
    };
    let mut want: Vec<&String> = names.iter().collect();
    want.sort();
    let Ok(mut have) = slate_pki::leaf::names_of(&server) else {
        return false;
    };
    have.sort();
    if have.iter().collect::<Vec<_>>() != want {
        return false;
    }
    let fresh =
        |pem: &str| slate_pki::leaf::not_after(pem).is_ok_and(|end| end - now > RENEW_BEFORE);
    [
        "apiserver.crt",
        "apiserver-kubelet-client.crt",
        "apiserver-etcd-client.crt",
        "front-proxy-client.crt",
    ]
    .iter()
    .all(|f| read(f).is_some_and(|pem| fresh(&pem)))
        && layout.admin_kubeconfig().is_file()
        && layout.component(SCHEDULER).join("kubeconfig").is_file()
        && layout
            .component(CONTROLLER_MANAGER)
            .join("kubeconfig")
            .is_file()
}
