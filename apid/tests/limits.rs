//! apid's bounds: connections per client address (handshakes included),
//! clients that go silent after the handshake, and machined's cap on open
//! dmesg streams, each seen from a client.

// The helpers below are part of the tests: a panic there is a test failing.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;

use std::net::SocketAddr;
use std::time::Duration;

use slate_apid::conn_limit::{FIRST_BYTES, MAX_PER_ADDRESS};
use slate_machined::api::MAX_KMSG_READERS;
use slate_proto::machine::DmesgRequest;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

/// A TCP connection to apid from `source` that never starts TLS.
async fn silent(source: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Whether apid closed `conn` (EOF or reset) within `wait`.
async fn closed(conn: &mut TcpStream, wait: Duration) -> bool {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(wait, conn.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => panic!("apid sent bytes before a ClientHello"),
        Err(_) => false,
    }
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let bundle = cluster();
    let node = start(Boot::Configured(&bundle.controlplane)).await;
    let to: SocketAddr = format!("127.0.0.1:{}", node.target.port).parse().unwrap();
    // 127.0.0.2 fills its share with connections that say nothing.
    let mut held = Vec::new();
    for _ in 0..MAX_PER_ADDRESS {
        held.push(silent("127.0.0.2", to).await);
    }
    let mut over = silent("127.0.0.2", to).await;
    assert!(
        closed(&mut over, Duration::from_secs(5)).await,
        "connection {} from one address was kept",
        MAX_PER_ADDRESS + 1
    );
    for conn in &mut held[..3] {
        assert!(!closed(conn, Duration::from_millis(100)).await);
    }
    // Everyone else is still served.
    let mut api = api(&node.target, admin_tls(&bundle)).await;
    api.version(VersionRequest {}).await.unwrap();
    // Closing them gives the address its slots back.
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = silent("127.0.0.2", to).await;
    assert!(!closed(&mut again, Duration::from_millis(300)).await);
}

#[tokio::test]
async fn dmesg_streams_are_capped_and_given_back() {
    if std::fs::File::open("/dev/kmsg").is_err() {
        slate_testskip::skip(
            "dmesg_streams_are_capped_and_given_back",
            slate_testskip::Reason::Privilege("reading /dev/kmsg"),
        );
        return;
    }
    let bundle = cluster();
    let node = start(Boot::Configured(&bundle.controlplane)).await;
    let mut api = api(&node.target, admin_tls(&bundle)).await;
    let follow = DmesgRequest {
        follow: true,
        tail: Some(1),
    };
    let mut open = Vec::new();
    for _ in 0..MAX_KMSG_READERS {
        let mut stream = api.dmesg(follow).await.unwrap().into_inner();
        // Its reader is running: the last line came.
        stream.message().await.unwrap().unwrap();
        open.push(stream);
    }
    let refused = api.dmesg(follow).await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("dmesg streams are open"),
        "{refused:?}"
    );
    // A stream the client drops frees its slot.
    open.pop();
    let mut freed = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Ok(s) = api.dmesg(follow).await {
            freed = Some(s);
            break;
        }
    }
    assert!(freed.is_some(), "the slot of a closed stream came back");
}

/// A client that completes the TLS handshake, with a good certificate,
/// and then says nothing (no HTTP/2 preface) is closed once
/// [`FIRST_BYTES`] have passed, giving its slot back: hyper alone waits
/// for the preface forever.
#[tokio::test]
async fn a_client_silent_after_the_handshake_is_closed() {
    let bundle = cluster();
    let node = start(Boot::Configured(&bundle.controlplane)).await;
    let to: SocketAddr = format!("127.0.0.1:{}", node.target.port).parse().unwrap();
    let tcp = TcpStream::connect(to).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(admin_tls(&bundle))
        .connect(name, tcp)
        .await
        .expect("the handshake succeeds");
    let started = std::time::Instant::now();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(FIRST_BYTES + Duration::from_secs(5), async {
        // Whatever apid sends first (its SETTINGS) is read past: the loop
        // ends when apid closes.
        loop {
            match tls.read(&mut byte).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "still open {:?} after the handshake",
        started.elapsed()
    );
    assert!(
        started.elapsed() >= FIRST_BYTES - Duration::from_secs(1),
        "closed after {:?}, before its deadline",
        started.elapsed()
    );
}
