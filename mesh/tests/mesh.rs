//! The userspace WireGuard mesh between two network namespaces joined by
//! a veth pair (10.99.0.1/24 and 10.99.0.2/24), set up by
//! `slate_tests::meshnode`: in each namespace a thread of this process
//! runs the mesh device through the library API (TUN `slmesh0`, UDP
//! 51820) with the other node as its only peer; the mesh addresses are
//! the nodes' ULA addresses (slate-discovery's derivation). The check is
//! what a user runs: a TCP echo across the mesh (ping is not installed
//! here). Root only; skipped with a message otherwise.

#![allow(clippy::unwrap_used)] // test code: a failed step is a failed test

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use slate_mesh::select::Path;
use slate_mesh::wire;
use slate_tests::meshnode::{self, Lab};
use slate_tests::netns;

fn skip(test: &str) -> bool {
    let why = meshnode::skip_reason();
    if let Some(why) = why {
        slate_testskip::skip(test, slate_testskip::Reason::Setup(why));
    }
    why.is_some()
}

type Side = Box<dyn FnOnce(std::net::TcpStream) -> Result<(), String> + Send>;

/// One TCP connection from namespace `from` to a listener on `[to]` in
/// namespace `to_ns`, each end run by its closure on a thread of its own;
/// the first error of either.
fn connection(
    from: &str,
    to_ns: &str,
    to: Ipv6Addr,
    client: Side,
    server: Side,
) -> Result<(), String> {
    let (port_tx, port_rx) = mpsc::channel();
    let to_ns = to_ns.to_owned();
    let server = std::thread::spawn(move || -> Result<(), String> {
        netns::enter(&to_ns).map_err(|e| e.to_string())?;
        let l =
            std::net::TcpListener::bind((to, 0)).map_err(|e| format!("listening on {to}: {e}"))?;
        port_tx.send(l.local_addr().unwrap().port()).unwrap();
        let (c, _) = l.accept().map_err(|e| e.to_string())?;
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        server(c)
    });
    let Ok(port) = port_rx.recv() else {
        return Err(format!("the listener: {:?}", server.join()));
    };
    let from = from.to_owned();
    let client = std::thread::spawn(move || -> Result<(), String> {
        netns::enter(&from).map_err(|e| e.to_string())?;
        let addr = SocketAddr::from((to, port));
        let c = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connecting to {addr} from {from}: {e}"))?;
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        client(c)
    });
    let client = client.join().map_err(|_| "client panicked".to_owned())?;
    let server = server.join().map_err(|_| "server panicked".to_owned())?;
    client.and(server)
}

/// What a user checks: a TCP connection from namespace `from` to a
/// listener on `to` in namespace `to_ns` carries data both ways (several
/// segments, larger than the mesh MTU in total).
fn tcp_echo(from: &str, to_ns: &str, to: Ipv6Addr) -> Result<(), String> {
    use std::io::{Read as _, Write as _};
    let echo: Side = Box::new(|mut c| {
        let mut buf = [0u8; 4096];
        loop {
            match c.read(&mut buf).map_err(|e| format!("echo read: {e}"))? {
                0 => return Ok(()),
                n => c.write_all(&buf[..n]).map_err(|e| e.to_string())?,
            }
        }
    });
    let check: Side = Box::new(|mut c| {
        let sent: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        c.write_all(&sent).map_err(|e| e.to_string())?;
        let mut got = vec![0u8; sent.len()];
        c.read_exact(&mut got)
            .map_err(|e| format!("reading the echo: {e}"))?;
        if got != sent {
            return Err("the echo differs".into());
        }
        Ok(())
    });
    connection(from, to_ns, to, check, echo)
}

fn assert_echo(from: &str, to_ns: &str, to: Ipv6Addr) {
    if let Err(e) = tcp_echo(from, to_ns, to) {
        panic!("TCP from {from} to [{to}] in {to_ns}: {e}");
    }
}

fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn tcp_across_the_mesh_with_counters() {
    if skip("tcp_across_the_mesh_with_counters") {
        return;
    }
    let lab = Lab::new("mp").expect("the mesh lab");
    assert_echo(&lab.a_ns, &lab.b_ns, lab.b.address);
    assert_echo(&lab.b_ns, &lab.a_ns, lab.a.address);
    // The counters refresh every tick.
    wait_until("both sides count traffic", Duration::from_secs(2), || {
        [lab.a.status(), lab.b.status()].iter().all(|s| {
            let p = &s.peers[0];
            p.tx_bytes > 0 && p.rx_bytes > 0 && p.last_handshake.is_some()
        })
    });
}

/// Sends `bytes` of a pattern from `from` to a sink on `to` in `to_ns`,
/// which reads them all and checks every byte.
fn bulk(from: &str, to_ns: &str, to: Ipv6Addr, bytes: usize) -> Result<(), String> {
    use std::io::{Read as _, Write as _};
    let pattern = |i: usize| (i % 251) as u8;
    let sink: Side = Box::new(move |mut c| {
        let mut buf = vec![0u8; 1 << 16];
        let mut at = 0;
        while at < bytes {
            let n = c
                .read(&mut buf)
                .map_err(|e| format!("after {at} bytes: {e}"))?;
            if n == 0 {
                return Err(format!("closed after {at} of {bytes} bytes"));
            }
            if let Some(bad) = (0..n).find(|k| buf[*k] != pattern(at + k)) {
                return Err(format!("byte {} differs", at + bad));
            }
            at += n;
        }
        Ok(())
    });
    let source: Side = Box::new(move |mut c| {
        let data: Vec<u8> = (0..bytes).map(pattern).collect();
        c.write_all(&data).map_err(|e| e.to_string())
    });
    connection(from, to_ns, to, source, sink)
}

/// A bulk transfer takes the offload path: the kernel hands the device
/// 64 KiB segments, which it cuts into packets (the sender's counter),
/// and the receiver joins the packets again for its kernel. Every byte
/// must arrive as sent, both ways (checksums, sequence numbers).
#[test]
fn bulk_tcp_is_cut_and_joined_and_arrives_intact() {
    if skip("bulk_tcp_is_cut_and_joined_and_arrives_intact") {
        return;
    }
    let lab = Lab::new("mo").expect("the mesh lab");
    for (from, to_ns, to) in [
        (&lab.a_ns, &lab.b_ns, lab.b.address),
        (&lab.b_ns, &lab.a_ns, lab.a.address),
    ] {
        if let Err(e) = bulk(from, to_ns, to, 32 << 20) {
            panic!("32 MiB from {from} to [{to}]: {e}");
        }
    }
    wait_until("counters show the offload", Duration::from_secs(2), || {
        [lab.a.status(), lab.b.status()]
            .iter()
            .all(|s| s.segments_cut > 0 && s.segments_joined > 0)
    });
}

/// Datagrams to the mesh port from `ns`: random bytes, headers of each
/// WireGuard message type with garbage behind them, and relay and gossip
/// frames from a stranger.
fn send_junk(ns: &str, to: SocketAddr) {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        netns::enter(&ns).unwrap();
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        for i in 0..300usize {
            let len = [0, 1, 4, 32, 64, 92, 148, 200, 1400][i % 9];
            let mut d: Vec<u8> = (0..len).map(|_| fastrand::u8(..)).collect();
            if len >= 4 && i % 2 == 0 {
                d[..4].copy_from_slice(&[(i % 4 + 1) as u8, 0, 0, 0]);
            }
            s.send_to(&d, to).unwrap();
        }
        let key: [u8; 32] = std::array::from_fn(|_| fastrand::u8(..));
        let inner = [4, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
        let mut frame = Vec::new();
        for i in 0..60 {
            match i % 3 {
                0 => wire::to_relay(&key, &inner, &mut frame),
                1 => wire::from_relay(&key, &inner, &mut frame),
                _ => frame = wire::gossip(&[i as u8; 100]),
            }
            s.send_to(&frame, to).unwrap();
        }
    })
    .join()
    .unwrap();
}

#[test]
fn junk_udp_does_not_stop_the_traffic() {
    if skip("junk_udp_does_not_stop_the_traffic") {
        return;
    }
    let lab = Lab::new("mj").expect("the mesh lab");
    assert_echo(&lab.a_ns, &lab.b_ns, lab.b.address);
    send_junk(&lab.a_ns, "10.99.0.2:51820".parse().unwrap());
    wait_until("the junk is counted", Duration::from_secs(2), || {
        lab.b.status().rejected_datagrams > 0
    });
    assert!(lab.b.running(), "the device stopped");
    assert_eq!(
        lab.b.status().relayed_datagrams,
        0,
        "relayed for a stranger"
    );
    assert_echo(&lab.a_ns, &lab.b_ns, lab.b.address);
    assert_echo(&lab.b_ns, &lab.a_ns, lab.a.address);
}

#[test]
fn a_peer_that_moves_is_followed() {
    if skip("a_peer_that_moves_is_followed") {
        return;
    }
    let lab = Lab::new("mr").expect("the mesh lab");
    assert_echo(&lab.a_ns, &lab.b_ns, lab.b.address);
    // B's underlay address changes; A still has the old endpoint.
    netns::run(&[
        "ip",
        "-n",
        &lab.b_ns,
        "addr",
        "del",
        "10.99.0.2/24",
        "dev",
        &lab.b_if,
    ]);
    netns::run(&[
        "ip",
        "-n",
        &lab.b_ns,
        "addr",
        "add",
        "10.99.0.3/24",
        "dev",
        &lab.b_if,
    ]);
    // B speaks first (as its keepalive would); A answers at the new place.
    assert_echo(&lab.b_ns, &lab.a_ns, lab.a.address);
    let moved: SocketAddr = "10.99.0.3:51820".parse().unwrap();
    wait_until("A follows B's endpoint", Duration::from_secs(2), || {
        lab.a.status().peers[0].endpoint == Some(Path::Direct(moved))
    });
    assert_echo(&lab.a_ns, &lab.b_ns, lab.b.address);
}
