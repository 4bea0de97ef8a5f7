//! The bootstrap-manifest step against a **stand-in** API server: an
//! HTTPS server on loopback that checks the client certificate against the
//! cluster CA (as kube-apiserver does with `--client-ca-file`), records
//! every request, and answers a server-side apply as the API does (200
//! with the object). It is not kube-apiserver: what it proves is the wire
//! shape of Slate's requests (method, path, query, content type, body) and
//! that the admin kubeconfig's identity is accepted by a verifier of the
//! cluster CA. Nothing here has met a real API server.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response};
use slate_config::MachineConfig;
use slate_k8s::kubeconfig;
use slate_k8s::pki::{self, NodeNames};

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path_and_query: String,
    content_type: String,
    body: serde_json::Value,
}

/// Starts the stand-in; returns its URL and the record of requests.
async fn stand_in(config: &MachineConfig) -> (String, Arc<Mutex<Vec<Recorded>>>) {
    let ca_pem = config.cluster.ca.crt_pem().unwrap();
    let ca =
        slate_pki::Authority::from_pem(&ca_pem, &config.cluster.ca.key_pem().unwrap().unwrap())
            .unwrap();
    let server = ca
        .issue_leaf(&slate_pki::leaf::Leaf {
            common_name: "stand-in kube-apiserver",
            organizations: &[],
            names: &["127.0.0.1".into()],
            purposes: &[slate_pki::leaf::Purpose::Server],
            days: 1,
        })
        .unwrap();
    let mut tls = slate_pki::tls::server_mtls(&server, &ca_pem).unwrap();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let record = Arc::new(Mutex::new(Vec::new()));
    let rec = record.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let rec = rec.clone();
            tokio::spawn(async move {
                // A client without the CA's certificate fails here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let rec = rec.clone();
                        async move {
                            let method = req.method().to_string();
                            let path_and_query = req.uri().path_and_query().unwrap().to_string();
                            let content_type = req
                                .headers()
                                .get("content-type")
                                .map(|v| v.to_str().unwrap().to_owned())
                                .unwrap_or_default();
                            let bytes = req.into_body().collect().await.unwrap().to_bytes();
                            let body: serde_json::Value =
                                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
                            // Server-side apply answers with the object, a
                            // delete with a Status (404 for a name "gone-…").
                            let (code, answer) = if method != "DELETE" {
                                (200, body.to_string())
                            } else {
                                let missing = path_and_query.contains("/gone-");
                                let code = if missing { 404 } else { 200 };
                                let status = serde_json::json!({
                                    "kind": "Status", "apiVersion": "v1", "metadata": {},
                                    "status": if missing { "Failure" } else { "Success" },
                                    "reason": if missing { "NotFound" } else { "" },
                                    "message": "", "code": code,
                                });
                                (code, status.to_string())
                            };
                            rec.lock().unwrap().push(Recorded {
                                method,
                                path_and_query,
                                content_type,
                                body,
                            });
                            Ok::<_, std::convert::Infallible>(
                                Response::builder()
                                    .status(code)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(answer)))
                                    .unwrap(),
                            )
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (url, record)
}

fn config() -> MachineConfig {
    slate_config::generate::generate(&slate_config::generate::Options {
        cluster_name: "prod".into(),
        endpoint: "https://api.prod.example:6443".into(),
        ..Default::default()
    })
    .unwrap()
    .controlplane
}

/// The admin kubeconfig a control-plane node writes, pointed at `url`.
fn admin_kubeconfig(config: &MachineConfig, url: &str) -> kube::config::Kubeconfig {
    let issued = pki::issue_all(config, &NodeNames::default()).unwrap();
    let mut k = kubeconfig::parse(&issued.admin_kubeconfig).unwrap();
    k.clusters[0].cluster.as_mut().unwrap().server = Some(url.to_owned());
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_object_is_server_side_applied_in_order() {
    let config = config();
    let (url, record) = stand_in(&config).await;
    let client = slate_k8s::apply::client(admin_kubeconfig(&config, &url))
        .await
        .unwrap();
    let manifests = slate_k8s::addons::objects(&config).unwrap();
    assert!(manifests.len() >= 4);
    slate_k8s::apply::apply_all(&client, &manifests)
        .await
        .unwrap();

    let seen = record.lock().unwrap().clone();
    assert_eq!(seen.len(), manifests.len(), "one request per object");
    for (m, r) in manifests.iter().zip(&seen) {
        assert_eq!(r.method, "PATCH", "{}", m.describe());
        let (path, query) = r.path_and_query.split_once('?').unwrap();
        assert_eq!(path, m.url_path());
        let mut query: Vec<&str> = query.split('&').filter(|q| !q.is_empty()).collect();
        query.sort();
        assert_eq!(
            query,
            ["fieldManager=slate", "force=true"],
            "{}",
            m.describe()
        );
        assert_eq!(r.content_type, "application/apply-patch+yaml");
        assert_eq!(r.body, m.body, "{}", m.describe());
    }
    // The first object is the bootstrap token, as kubelets need it.
    let token = &seen[0];
    assert!(
        token
            .path_and_query
            .starts_with("/api/v1/namespaces/kube-system/secrets/bootstrap-token-")
    );
    assert_eq!(token.body["type"], "bootstrap.kubernetes.io/token");
    let (id, secret) = config.machine.token.split_once('.').unwrap();
    assert_eq!(token.body["stringData"]["token-id"], id);
    assert_eq!(token.body["stringData"]["token-secret"], secret);

    // Applying again sends the same requests: it is idempotent by design.
    slate_k8s::apply::apply_all(&client, &manifests)
        .await
        .unwrap();
    assert_eq!(record.lock().unwrap().len(), 2 * manifests.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_another_cluster_is_refused_by_the_stand_in() {
    let config = config();
    let (url, record) = stand_in(&config).await;
    let other = admin_kubeconfig(&self::config(), &url);
    // Another cluster's CA: the TLS handshake fails (server unknown to
    // the client, client unknown to the server); nothing is recorded.
    let client = slate_k8s::apply::client(other).await.unwrap();
    let err = slate_k8s::apply::apply_all(&client, &slate_k8s::addons::objects(&config).unwrap())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("applying Secret kube-system/bootstrap-token-")
    );
    assert!(record.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_objects_are_deleted_and_a_missing_one_is_no_error() {
    let config = config();
    let (url, record) = stand_in(&config).await;
    let client = slate_k8s::apply::client(admin_kubeconfig(&config, &url))
        .await
        .unwrap();
    let secret = |name: &str| {
        let mut s =
            slate_k8s::addons::bootstrap::token_secret("abcdef.0123456789abcdef", "x").unwrap();
        s.metadata.name = Some(name.into());
        slate_k8s::Manifest::of(&s).unwrap()
    };
    slate_k8s::apply::delete_all(
        &client,
        &[secret("bootstrap-token-abcdef"), secret("gone-one")],
    )
    .await
    .unwrap();
    let seen = record.lock().unwrap().clone();
    let calls: Vec<(&str, &str)> = seen
        .iter()
        .map(|r| {
            (
                r.method.as_str(),
                r.path_and_query.split('?').next().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        calls,
        [
            (
                "DELETE",
                "/api/v1/namespaces/kube-system/secrets/bootstrap-token-abcdef"
            ),
            ("DELETE", "/api/v1/namespaces/kube-system/secrets/gone-one"),
        ]
    );
}
