//! The discovery service in-process on 127.0.0.1, with nodes publishing and
//! listing through the client, an intruder, expiry on a clock the test
//! moves, and junk on the socket.
// Test helpers outside #[test] fns: a panic here fails the test that called it.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use slate_discovery::client::{self, ClientError};
use slate_discovery::gossip::AffiliateTable;
use slate_discovery::record::{ClusterKeys, ControlPlane, Record, next_version};
use slate_discovery::service::{self, Clock, Limits, Service};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const ID: [u8; 32] = [0x11; 32];
const SECRET: [u8; 32] = [0x22; 32];

/// A clock that moves only when the test says.
struct TestClock(Mutex<Instant>);

impl TestClock {
    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for TestClock {
    fn now(&self) -> Instant {
        *self.0.lock().unwrap()
    }
}

struct Running {
    endpoint: String,
    addr: SocketAddr,
    clock: Arc<TestClock>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops the service and waits until its port is closed.
    async fn stop(&mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(limits: Limits) -> Running {
    start_with(limits, None).await
}

/// `members`: a node's copy, which serves that cluster only.
async fn start_with(limits: Limits, members: Option<ClusterKeys>) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let clock = Arc::new(TestClock(Mutex::new(Instant::now())));
    let mut service = Service::new(limits, clock.clone());
    if let Some(keys) = members {
        service = service.members_only(Arc::new(keys));
    }
    let service = Arc::new(service);
    let task = tokio::spawn(service::run(listener, service));
    Running {
        endpoint: format!("http://{addr}"),
        addr,
        clock,
        task,
    }
}

fn record(keys: &ClusterKeys, node: &str, last: u8) -> Record {
    let public_key = [last; 32];
    Record {
        node_id: node.into(),
        hostname: node.into(),
        public_key,
        mesh_address: keys.mesh_address(&public_key),
        endpoints: vec![SocketAddr::from(([192, 0, 2, last], 51820))],
        networks: vec![format!("10.244.{last}.0/24").parse().unwrap()],
        control_plane: (last == 1).then(|| ControlPlane {
            api_endpoint: SocketAddr::from(([192, 0, 2, last], 6443)),
        }),
        seen: vec![],
        issued_ms: next_version(None, SystemTime::now()),
        ttl_secs: 300,
    }
}

const TTL: Duration = Duration::from_secs(300);

/// Publishes `sealed` as node `node` of the cluster of `keys`.
async fn put(
    svc: &Running,
    keys: &ClusterKeys,
    node: &str,
    sealed: &[u8],
    ttl: Duration,
) -> Result<(), ClientError> {
    client::publish(
        &client::affiliate_url(&svc.endpoint, keys, node),
        keys,
        sealed,
        ttl,
    )
    .await
}

#[tokio::test]
async fn two_nodes_find_each_other_and_an_intruder_is_ignored() {
    let svc = start(Limits::default()).await;
    let keys = Arc::new(ClusterKeys::new(&ID, &SECRET));
    let list = client::affiliates_url(&svc.endpoint, &keys);

    let mut a = AffiliateTable::new(keys.clone(), "a", 100);
    let mut b = AffiliateTable::new(keys.clone(), "b", 100);
    let sealed_a = a.set_own(record(&keys, "a", 1)).unwrap().to_vec();
    let sealed_b = b.set_own(record(&keys, "b", 2)).unwrap().to_vec();
    put(&svc, &keys, "a", &sealed_a, TTL).await.unwrap();
    put(&svc, &keys, "b", &sealed_b, TTL).await.unwrap();

    // Someone who learnt the cluster key but not the secret publishes too.
    let intruder = ClusterKeys::new(&ID, &[0x33; 32]);
    let forged = intruder.seal(&record(&intruder, "evil", 9)).unwrap();
    client::publish(
        &client::affiliate_url(&svc.endpoint, &keys, "evil"),
        &intruder,
        &forged,
        TTL,
    )
    .await
    .unwrap();

    let now = SystemTime::now();
    let report = a.merge_bundle(&client::fetch_bundle(&list).await.unwrap(), now);
    assert_eq!(
        (report.added, report.own, report.refused),
        (1, 1, 1),
        "{report:?}"
    );
    let seen = &a.get("b").unwrap().record;
    assert_eq!(seen, &record_of(&b));
    assert!(seen.control_plane.is_none());

    let listed = client::fetch(&list).await.unwrap();
    assert_eq!(listed.len(), 3);
    let report = b.merge_all(listed.iter().map(Vec::as_slice), now);
    assert_eq!(
        (report.added, report.own, report.refused),
        (1, 1, 1),
        "{report:?}"
    );
    assert_eq!(
        b.get("a")
            .unwrap()
            .record
            .control_plane
            .as_ref()
            .unwrap()
            .api_endpoint
            .port(),
        6443
    );
    assert!(b.get("evil").is_none());

    // Another cluster's list is empty, not someone else's.
    let other = ClusterKeys::new(&[0x44; 32], &SECRET);
    let other_list = client::affiliates_url(&svc.endpoint, &other);
    assert!(client::fetch(&other_list).await.unwrap().is_empty());

    // A node that leaves is gone from the list.
    client::delete(&client::affiliate_url(&svc.endpoint, &keys, "a"), &keys)
        .await
        .unwrap();
    assert_eq!(client::fetch(&list).await.unwrap().len(), 2);
}

fn record_of(t: &AffiliateTable) -> Record {
    t.own().unwrap().record.clone()
}

#[tokio::test]
async fn a_rebooted_node_rejoins_through_a_peer_while_the_service_is_down() {
    let mut svc = start(Limits::default()).await;
    let keys = Arc::new(ClusterKeys::new(&ID, &SECRET));
    let list = client::affiliates_url(&svc.endpoint, &keys);
    let mut a = AffiliateTable::new(keys.clone(), "a", 100);
    for (node, last) in [("a", 1), ("b", 2), ("c", 3)] {
        let sealed = keys.seal(&record(&keys, node, last)).unwrap();
        let url = client::affiliate_url(&svc.endpoint, &keys, node);
        client::publish(&url, &keys, &sealed, TTL).await.unwrap();
    }
    a.set_own(record(&keys, "a", 1)).unwrap();
    let report = a.merge_bundle(
        &client::fetch_bundle(&list).await.unwrap(),
        SystemTime::now(),
    );
    assert_eq!(report.added, 2);

    svc.stop().await;
    // c reboots with an empty table and cannot reach the service...
    let mut c = AffiliateTable::new(keys.clone(), "c", 100);
    let mut rebooted = record(&keys, "c", 3);
    rebooted.issued_ms += 1000; // a later version than the one published
    c.set_own(rebooted).unwrap();
    let err = client::fetch_bundle(&list).await.unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    // ...but a peer's bundle tells it about everyone, and it about itself.
    let report = c.merge_bundle(&a.bundle(SystemTime::now()), SystemTime::now());
    assert_eq!((report.added, report.own), (2, 1), "{report:?}");
    assert!(c.get("a").is_some() && c.get("b").is_some());
    let report = a.merge_bundle(&c.bundle(SystemTime::now()), SystemTime::now());
    assert_eq!(
        (report.updated, report.stale, report.own),
        (1, 1, 1),
        "{report:?}"
    );
}

#[tokio::test]
async fn records_expire_after_their_ttl() {
    let svc = start(Limits {
        ttl: Duration::from_secs(60),
        ..Limits::default()
    })
    .await;
    let keys = ClusterKeys::new(&ID, &SECRET);
    let list = client::affiliates_url(&svc.endpoint, &keys);
    let a = keys.seal(&record(&keys, "a", 1)).unwrap();
    let b = keys.seal(&record(&keys, "b", 2)).unwrap();
    // a asks for more than the service gives, b for less.
    put(&svc, &keys, "a", &a, TTL).await.unwrap();
    put(&svc, &keys, "b", &b, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(client::fetch(&list).await.unwrap().len(), 2);
    svc.clock.advance(Duration::from_secs(5));
    assert_eq!(client::fetch(&list).await.unwrap(), vec![a.clone()]);
    svc.clock.advance(Duration::from_secs(55));
    assert!(client::fetch(&list).await.unwrap().is_empty());
    // Publishing again brings it back.
    put(&svc, &keys, "a", &a, TTL).await.unwrap();
    assert_eq!(client::fetch(&list).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_full_cluster_is_refused_with_429() {
    let svc = start(Limits {
        max_affiliates: 2,
        ..Limits::default()
    })
    .await;
    let keys = ClusterKeys::new(&ID, &SECRET);
    let sealed = keys.seal(&record(&keys, "a", 1)).unwrap();
    for node in ["a", "b"] {
        put(&svc, &keys, node, &sealed, TTL).await.unwrap();
    }
    let err = put(&svc, &keys, "c", &sealed, TTL).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Status { status, .. } if status == 429),
        "{err:?}"
    );
    // Known affiliates still refresh.
    put(&svc, &keys, "a", &sealed, TTL).await.unwrap();
}

/// Sends `request` (while reading, so a server that answers early and
/// closes does not block the writer) and returns the status line's code,
/// or `None` if the server closed without an answer.
async fn raw(addr: SocketAddr, request: Vec<u8>) -> Option<u16> {
    let (mut r, mut w) = TcpStream::connect(addr).await.unwrap().into_split();
    let writer = tokio::spawn(async move {
        let _ = w.write_all(&request).await;
        w
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server neither answered nor closed");
    writer.abort();
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
}

fn req(head: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!("{head}\r\nHost: x\r\nConnection: close\r\n").into_bytes();
    if !head.contains("chunked") {
        r.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

#[tokio::test]
async fn junk_gets_a_4xx_or_a_closed_connection_and_the_service_keeps_answering() {
    let svc = start(Limits {
        request_timeout: Duration::from_millis(500),
        ..Limits::default()
    })
    .await;
    let keys = ClusterKeys::new(&ID, &SECRET);
    let key = keys.cluster_key().to_owned();
    let ten_mib = vec![b'x'; 10 << 20];
    let mut chunked = b"PUT /v1/clusters/abc/affiliates/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for chunk in ten_mib.chunks(64 << 10) {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let mut huge_header = b"GET /healthz HTTP/1.1\r\nX-Big: ".to_vec();
    huge_header.extend(std::iter::repeat_n(b'a', 64 << 10));
    huge_header.extend_from_slice(b"\r\n\r\n");

    let table: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("unknown path", req("GET /nope HTTP/1.1", b""), &[404]),
        (
            "dotted cluster key",
            req("GET /v1/clusters/../affiliates HTTP/1.1", b""),
            &[400],
        ),
        (
            "bad cluster key",
            req("PUT /v1/clusters/a.b/affiliates/x HTTP/1.1", b"x"),
            &[400],
        ),
        (
            "bad affiliate id",
            req(
                &format!("PUT /v1/clusters/{key}/affiliates/a%20b HTTP/1.1"),
                b"x",
            ),
            &[400],
        ),
        (
            "wrong method",
            req(&format!("POST /v1/clusters/{key}/affiliates HTTP/1.1"), b""),
            &[405],
        ),
        (
            "empty body",
            req(
                &format!("PUT /v1/clusters/{key}/affiliates/x HTTP/1.1"),
                b"",
            ),
            &[400],
        ),
        (
            "bad ttl",
            req(
                &format!("PUT /v1/clusters/{key}/affiliates/x HTTP/1.1\r\nslate-ttl: soon"),
                b"x",
            ),
            &[400],
        ),
        (
            "10 MiB body",
            req(
                &format!("PUT /v1/clusters/{key}/affiliates/x HTTP/1.1"),
                &ten_mib,
            ),
            &[413],
        ),
        ("10 MiB chunked body", chunked, &[413]),
        ("huge header", huge_header, &[431]),
        (
            "garbage bytes",
            b"\x00\xff\x13garbage\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            &[400, 505],
        ),
        ("silence", Vec::new(), &[408]),
        (
            "half a request",
            b"GET /healthz HTTP/1.1\r\nHost:".to_vec(),
            &[408],
        ),
    ];
    for (name, bytes, allowed) in table {
        // Closing without an answer is also fine.
        if let Some(code) = raw(svc.addr, bytes).await {
            assert!(allowed.contains(&code), "{name}: answered {code}");
        }
        // After each, a good request still works.
        assert_eq!(
            raw(svc.addr, req("GET /healthz HTTP/1.1", b"")).await,
            Some(200),
            "after {name}"
        );
    }

    let list = client::affiliates_url(&svc.endpoint, &keys);
    let sealed = keys.seal(&record(&keys, "a", 1)).unwrap();
    put(&svc, &keys, "a", &sealed, TTL).await.unwrap();
    assert_eq!(client::fetch(&list).await.unwrap(), vec![sealed]);
}

/// The status of a raw HTTP/1.1 request to the service.
async fn raw_status(addr: SocketAddr, request: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    text.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_node_s_copy_takes_writes_only_from_its_cluster() {
    let keys = ClusterKeys::new(&ID, &SECRET);
    let svc = start_with(Limits::default(), Some(ClusterKeys::new(&ID, &SECRET))).await;
    let list = client::affiliates_url(&svc.endpoint, &keys);
    let mine = keys.seal(&record(&keys, "a", 1)).unwrap();
    put(&svc, &keys, "a", &mine, TTL).await.unwrap();

    let forbidden = |r: Result<(), ClientError>| matches!(r, Err(ClientError::Status { status, .. }) if status == 403);
    // Someone who knows the cluster key (it is in every URL) but not the
    // secret: cannot add, displace or delete.
    let intruder = ClusterKeys::new(&ID, &[0x33; 32]);
    let junk = intruder.seal(&record(&intruder, "evil", 9)).unwrap();
    for node in ["evil", "a"] {
        let url = client::affiliate_url(&svc.endpoint, &keys, node);
        assert!(
            forbidden(client::publish(&url, &intruder, &junk, TTL).await),
            "{node}"
        );
    }
    let a = client::affiliate_url(&svc.endpoint, &keys, "a");
    assert!(forbidden(client::delete(&a, &intruder).await));
    // Another cluster, even with a valid proof of its own: not served.
    let other = ClusterKeys::new(&[0x44; 32], &[0x55; 32]);
    let elsewhere = client::affiliate_url(&svc.endpoint, &other, "x");
    assert!(forbidden(
        client::publish(&elsewhere, &other, &junk, TTL).await
    ));
    // No proof at all, and a proof copied onto another request.
    let path = a.strip_prefix(&svc.endpoint).unwrap();
    let no_proof = format!(
        "PUT {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc"
    );
    assert!(raw_status(svc.addr, &no_proof).await.contains("403"));
    let now = slate_discovery::record::unix_ms(SystemTime::now());
    let proof = slate_discovery::proof::sign(&keys, "PUT", path, now, b"abc");
    let replayed = format!(
        "PUT {path} HTTP/1.1\r\nhost: x\r\nslate-proof: {proof}\r\ncontent-length: 3\r\nconnection: close\r\n\r\nxyz"
    );
    assert!(raw_status(svc.addr, &replayed).await.contains("403"));

    let listed = client::fetch(&list).await.unwrap();
    assert_eq!(
        listed,
        vec![mine.to_vec()],
        "only the member's record is kept"
    );
    // The member itself may still delete its record.
    client::delete(&a, &keys).await.unwrap();
    assert!(client::fetch(&list).await.unwrap().is_empty());
}
