//! State machine and lease tests: a scripted server answers the client's
//! encoded messages, time is passed in.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode, UnknownOption};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

use super::lease::{Lease, Timers};
use super::state::{Action, Client, Ignored, Phase};
use crate::ipv4_setup::Route;

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn client(now: Instant) -> Client {
    Client::new(&MAC, None, fastrand::Rng::with_seed(7), now)
}

/// The single datagram in `actions`, decoded, with its destination.
fn sent(actions: &[Action]) -> (Message, Ipv4Addr) {
    let sends: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, bytes, .. } => {
                Some((Message::decode(&mut Decoder::new(bytes)).unwrap(), *to))
            }
            _ => None,
        })
        .collect();
    assert_eq!(sends.len(), 1, "{actions:?}");
    sends.into_iter().next().unwrap()
}

fn msg_type(m: &Message) -> MessageType {
    m.opts().msg_type().unwrap()
}

/// A server reply to `req`.
fn reply(req: &Message, kind: MessageType, yiaddr: Ipv4Addr, opts: Vec<DhcpOption>) -> Vec<u8> {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootReply)
        .set_xid(req.xid())
        .set_flags(req.flags())
        .set_chaddr(req.chaddr())
        .set_yiaddr(yiaddr);
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    for o in opts {
        m.opts_mut().insert(o);
    }
    let mut buf = Vec::new();
    m.encode(&mut Encoder::new(&mut buf)).unwrap();
    buf
}

fn lease_opts(lease: u32) -> Vec<DhcpOption> {
    vec![
        DhcpOption::ServerIdentifier(ip("10.0.2.2")),
        DhcpOption::AddressLeaseTime(lease),
        DhcpOption::SubnetMask(ip("255.255.255.0")),
        DhcpOption::Router(vec![ip("10.0.2.2")]),
        DhcpOption::DomainNameServer(vec![ip("10.0.2.3")]),
        DhcpOption::DomainName("example.com\0".into()),
        DhcpOption::Hostname("node1".into()),
        DhcpOption::InterfaceMtu(1450),
    ]
}

/// Drives a fresh client to BOUND with `opts` in the ACK; returns the
/// client, the lease, and when the REQUEST went out.
fn bound(t0: Instant, opts: Vec<DhcpOption>) -> (Client, Lease, Instant) {
    let mut c = client(t0);
    let (discover, _) = sent(&c.on_timeout(t0));
    let offer = reply(
        &discover,
        MessageType::Offer,
        ip("10.0.2.15"),
        lease_opts(3600),
    );
    let t_req = t0 + Duration::from_millis(10);
    let (request, _) = sent(&c.on_packet(t_req, &offer).unwrap());
    let ack = reply(&request, MessageType::Ack, ip("10.0.2.15"), opts);
    let actions = c.on_packet(t_req + Duration::from_millis(5), &ack).unwrap();
    let [Action::Configure { old: None, new }] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    (c, new.clone(), t_req)
}

#[test]
fn happy_path_to_bound() {
    let t0 = Instant::now();
    let mut c = client(t0);
    assert_eq!(c.phase(), Phase::Init);
    assert_eq!(c.deadline(), Some(t0), "first DISCOVER at once");

    let (discover, to) = sent(&c.on_timeout(t0));
    assert_eq!(to, Ipv4Addr::BROADCAST);
    assert_eq!(msg_type(&discover), MessageType::Discover);
    assert!(discover.flags().broadcast());
    assert_eq!(discover.chaddr(), MAC);
    let Some(DhcpOption::ParameterRequestList(prl)) =
        discover.opts().get(OptionCode::ParameterRequestList)
    else {
        panic!("no PRL")
    };
    for code in [
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::ClasslessStaticRoute,
        OptionCode::InterfaceMtu,
    ] {
        assert!(prl.contains(&code), "{code:?}");
    }
    assert_eq!(c.phase(), Phase::Selecting);

    let offer = reply(
        &discover,
        MessageType::Offer,
        ip("10.0.2.15"),
        lease_opts(3600),
    );
    let (request, to) = sent(&c.on_packet(t0, &offer).unwrap());
    assert_eq!(to, Ipv4Addr::BROADCAST);
    assert_eq!(msg_type(&request), MessageType::Request);
    assert_eq!(
        request.xid(),
        discover.xid(),
        "REQUEST answers the OFFER's xid"
    );
    assert_eq!(
        request.opts().get(OptionCode::RequestedIpAddress),
        Some(&DhcpOption::RequestedIpAddress(ip("10.0.2.15")))
    );
    assert_eq!(
        request.opts().get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(ip("10.0.2.2")))
    );
    assert_eq!(c.phase(), Phase::Requesting);

    // A second OFFER (another server) is ignored now.
    let late = reply(
        &discover,
        MessageType::Offer,
        ip("10.0.2.99"),
        lease_opts(3600),
    );
    assert!(matches!(
        c.on_packet(t0, &late),
        Err(Ignored::Unexpected { .. })
    ));

    let ack = reply(
        &request,
        MessageType::Ack,
        ip("10.0.2.15"),
        lease_opts(3600),
    );
    let actions = c.on_packet(t0 + secs(1), &ack).unwrap();
    let [Action::Configure { old: None, new }] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    assert_eq!(new.address, ip("10.0.2.15"));
    assert_eq!(new.prefix_len, 24);
    assert_eq!(new.server, ip("10.0.2.2"));
    assert_eq!(new.routes, vec![Route::default_via(ip("10.0.2.2"))]);
    assert_eq!(new.dns, vec![ip("10.0.2.3")]);
    assert_eq!(new.domain.as_deref(), Some("example.com"));
    assert_eq!(new.hostname.as_deref(), Some("node1"));
    assert_eq!(new.mtu, Some(1450));
    assert_eq!(c.phase(), Phase::Bound);
    // Lease counted from the REQUEST (t0), not the ACK.
    assert_eq!(c.deadline(), Some(t0 + secs(1800)));

    let setup = new.setup(t0 + secs(600));
    assert_eq!(setup.lifetime, Some(secs(3000)));
    assert_eq!(setup.search.as_deref(), Some("example.com"));
}

#[test]
fn renew_rebind_expire_timing() {
    let t0 = Instant::now();
    let mut opts = lease_opts(300);
    opts.push(DhcpOption::Renewal(100));
    opts.push(DhcpOption::Rebinding(200));
    let (mut c, lease, t) = bound(t0, opts);
    assert_eq!(lease.t1_at(), Some(t + secs(100)));
    assert_eq!(lease.t2_at(), Some(t + secs(200)));
    assert_eq!(lease.expiry(), Some(t + secs(300)));
    assert_eq!(c.deadline(), Some(t + secs(100)));
    assert!(c.on_timeout(t + secs(99)).is_empty(), "not due yet");

    // T1: unicast to the server, our address in ciaddr, new xid.
    let (renew, to) = sent(&c.on_timeout(t + secs(100)));
    assert_eq!(c.phase(), Phase::Renewing);
    assert_eq!(to, ip("10.0.2.2"));
    assert_eq!(renew.ciaddr(), ip("10.0.2.15"));
    assert!(!renew.flags().broadcast());
    assert!(renew.opts().get(OptionCode::ServerIdentifier).is_none());
    assert!(renew.opts().get(OptionCode::RequestedIpAddress).is_none());
    // Retransmit after max(60 s, half the time to T2) = 60 s.
    assert_eq!(c.deadline(), Some(t + secs(160)));
    let (again, to) = sent(&c.on_timeout(t + secs(160)));
    assert_eq!((again.xid(), to), (renew.xid(), ip("10.0.2.2")));
    assert_eq!(c.deadline(), Some(t + secs(200)), "never past T2");

    // T2: broadcast.
    let (rebind, to) = sent(&c.on_timeout(t + secs(200)));
    assert_eq!(c.phase(), Phase::Rebinding);
    assert_eq!(to, Ipv4Addr::BROADCAST);
    assert_eq!(rebind.ciaddr(), ip("10.0.2.15"));
    assert_eq!(c.deadline(), Some(t + secs(260)));
    sent(&c.on_timeout(t + secs(260)));
    assert_eq!(c.deadline(), Some(t + secs(300)), "never past expiry");

    // Expiry: remove the lease and start over at once.
    let actions = c.on_timeout(t + secs(300));
    assert!(matches!(&actions[0], Action::Deconfigure(l) if l.address == ip("10.0.2.15")));
    let (discover, _) = sent(&actions);
    assert_eq!(msg_type(&discover), MessageType::Discover);
    assert_eq!(c.phase(), Phase::Selecting);
}

#[test]
fn renewal_ack_updates_lease() {
    let t0 = Instant::now();
    let (mut c, first, t) = bound(t0, lease_opts(1000));
    let t1 = t + secs(500);
    let (renew, _) = sent(&c.on_timeout(t1));
    let ack = reply(&renew, MessageType::Ack, ip("10.0.2.15"), lease_opts(1000));
    let actions = c.on_packet(t1 + secs(1), &ack).unwrap();
    let [
        Action::Configure {
            old: Some(old),
            new,
        },
    ] = actions.as_slice()
    else {
        panic!("{actions:?}")
    };
    assert_eq!(old, &first);
    assert_eq!(new.address, first.address);
    assert_eq!(new.start, t1);
    assert_eq!(c.phase(), Phase::Bound);
    assert_eq!(c.deadline(), Some(t1 + secs(500)));

    // A renewal that moves us to another address.
    let (renew, _) = sent(&c.on_timeout(t1 + secs(500)));
    let ack = reply(&renew, MessageType::Ack, ip("10.0.2.16"), lease_opts(1000));
    let actions = c.on_packet(t1 + secs(500), &ack).unwrap();
    let [
        Action::Configure {
            old: Some(old),
            new,
        },
    ] = actions.as_slice()
    else {
        panic!("{actions:?}")
    };
    assert_eq!(
        (old.address, new.address),
        (ip("10.0.2.15"), ip("10.0.2.16"))
    );
}

#[test]
fn default_timers_without_t1_t2() {
    let t0 = Instant::now();
    let (c, lease, t) = bound(t0, lease_opts(1000));
    assert_eq!(lease.t1_at(), Some(t + secs(500)));
    assert_eq!(lease.t2_at(), Some(t + secs(875)));
    assert_eq!(c.deadline(), lease.t1_at());

    // (lease, T1 option, T2 option) → (T1, T2) in seconds.
    type Case = (u32, Option<u32>, Option<u32>, Option<(u64, u64)>);
    let cases: &[Case] = &[
        (1000, None, None, Some((500, 875))),
        (1000, Some(100), Some(200), Some((100, 200))),
        // T2 beyond the lease, T1 beyond T2, zeros: defaults.
        (1000, Some(900), Some(2000), Some((500, 875))),
        (1000, Some(0), Some(0), Some((500, 875))),
        // Valid T2 below the default T1: T1 follows T2.
        (1000, None, Some(300), Some((300, 300))),
        (u32::MAX, Some(10), Some(20), None),
    ];
    for &(lease, t1, t2, want) in cases {
        let got = Timers::new(lease, t1, t2).map(|t| (t.t1.as_secs(), t.t2.as_secs()));
        assert_eq!(got, want, "lease {lease} t1 {t1:?} t2 {t2:?}");
    }

    // Infinite lease: nothing to time once bound.
    let (c, _, _) = bound(t0, {
        let mut o = lease_opts(u32::MAX);
        o.push(DhcpOption::Renewal(10));
        o
    });
    assert_eq!(c.deadline(), None);
}

#[test]
fn nak_returns_to_init() {
    let t0 = Instant::now();
    let mut c = client(t0);
    let (discover, _) = sent(&c.on_timeout(t0));
    let offer = reply(
        &discover,
        MessageType::Offer,
        ip("10.0.2.15"),
        lease_opts(3600),
    );
    let (request, _) = sent(&c.on_packet(t0, &offer).unwrap());

    // A NAK from a server we did not select is not ours to obey.
    let other = reply(
        &request,
        MessageType::Nak,
        Ipv4Addr::UNSPECIFIED,
        vec![DhcpOption::ServerIdentifier(ip("10.0.2.9"))],
    );
    assert!(matches!(
        c.on_packet(t0, &other),
        Err(Ignored::OtherServer { .. })
    ));

    let nak = reply(
        &request,
        MessageType::Nak,
        Ipv4Addr::UNSPECIFIED,
        vec![DhcpOption::ServerIdentifier(ip("10.0.2.2"))],
    );
    assert!(c.on_packet(t0, &nak).unwrap().is_empty());
    assert_eq!(c.phase(), Phase::Init);
    assert_eq!(c.deadline(), Some(t0 + secs(1)));
    let (again, _) = sent(&c.on_timeout(t0 + secs(1)));
    assert_eq!(msg_type(&again), MessageType::Discover);
    assert_ne!(again.xid(), discover.xid(), "a new exchange, a new xid");

    // NAK while RENEWING: the lease is gone.
    let (mut c, lease, t) = bound(t0, lease_opts(1000));
    let (renew, _) = sent(&c.on_timeout(t + secs(500)));
    let nak = reply(&renew, MessageType::Nak, Ipv4Addr::UNSPECIFIED, vec![]);
    let actions = c.on_packet(t + secs(501), &nak).unwrap();
    assert_eq!(actions, vec![Action::Deconfigure(lease)]);
    assert_eq!(c.phase(), Phase::Init);
}

#[test]
fn requesting_gives_up_after_four_requests() {
    let t0 = Instant::now();
    let mut c = client(t0);
    let (discover, _) = sent(&c.on_timeout(t0));
    let offer = reply(
        &discover,
        MessageType::Offer,
        ip("10.0.2.15"),
        lease_opts(3600),
    );
    sent(&c.on_packet(t0, &offer).unwrap());
    for _ in 0..3 {
        let d = c.deadline().unwrap();
        let (m, _) = sent(&c.on_timeout(d));
        assert_eq!(msg_type(&m), MessageType::Request);
    }
    let d = c.deadline().unwrap();
    let (m, _) = sent(&c.on_timeout(d));
    assert_eq!(msg_type(&m), MessageType::Discover);
    assert_ne!(m.xid(), discover.xid());
}

#[test]
fn discover_backoff_doubles_with_jitter_and_caps() {
    let t0 = Instant::now();
    let mut c = client(t0);
    let mut now = t0;
    sent(&c.on_timeout(now));
    for base in [1u64, 2, 4, 8, 16, 32, 64, 64, 64] {
        let next = c.deadline().unwrap();
        let delay = next - now;
        let jitter = Duration::from_millis(1000.min(base * 500));
        assert!(
            delay >= secs(base) - jitter && delay <= secs(base) + jitter,
            "base {base}: {delay:?}"
        );
        now = next;
        let (m, _) = sent(&c.on_timeout(now));
        assert_eq!(msg_type(&m), MessageType::Discover);
        assert_eq!(u64::from(m.secs()), (now - t0).as_secs());
    }
}

#[test]
fn classless_routes_override_router() {
    let t0 = Instant::now();
    // RFC 3442 encoding: width, significant octets, router.
    let raw: Vec<u8> = [
        &[16u8, 10, 1, 10, 0, 2, 1][..],    // 10.1.0.0/16 via 10.0.2.1
        &[24, 192, 168, 7, 0, 0, 0, 0][..], // 192.168.7.0/24 on-link
        &[0, 10, 0, 2, 254][..],            // default via 10.0.2.254
        &[32, 169, 254, 169, 254, 10, 0, 2, 1][..], // host route
    ]
    .concat();
    let mut opts = lease_opts(3600); // includes Router 10.0.2.2, to be ignored
    opts.push(DhcpOption::Unknown(UnknownOption::new(
        OptionCode::ClasslessStaticRoute,
        raw,
    )));
    let (_, lease, _) = bound(t0, opts);
    assert_eq!(
        lease.routes,
        vec![
            Route {
                destination: ip("10.1.0.0"),
                prefix_len: 16,
                gateway: Some(ip("10.0.2.1"))
            },
            Route {
                destination: ip("192.168.7.0"),
                prefix_len: 24,
                gateway: None
            },
            Route::default_via(ip("10.0.2.254")),
            Route {
                destination: ip("169.254.169.254"),
                prefix_len: 32,
                gateway: Some(ip("10.0.2.1"))
            },
        ]
    );
    // Host bits a server left in the destination are cleared.
    assert_eq!(
        super::lease::classless_route(ip("10.1.2.3"), 16, ip("10.0.2.1")).destination,
        ip("10.1.0.0")
    );
}

#[test]
fn bad_ack_is_ignored() {
    let t0 = Instant::now();
    let mut c = client(t0);
    let (discover, _) = sent(&c.on_timeout(t0));
    let offer = reply(
        &discover,
        MessageType::Offer,
        ip("10.0.2.15"),
        lease_opts(3600),
    );
    let (request, _) = sent(&c.on_packet(t0, &offer).unwrap());
    let no_lease_time = reply(
        &request,
        MessageType::Ack,
        ip("10.0.2.15"),
        vec![DhcpOption::ServerIdentifier(ip("10.0.2.2"))],
    );
    assert!(matches!(
        c.on_packet(t0, &no_lease_time),
        Err(Ignored::BadAck(_))
    ));
    let zero_addr = reply(
        &request,
        MessageType::Ack,
        Ipv4Addr::UNSPECIFIED,
        lease_opts(3600),
    );
    assert!(matches!(
        c.on_packet(t0, &zero_addr),
        Err(Ignored::BadAck(_))
    ));
    assert_eq!(c.phase(), Phase::Requesting);
}

#[test]
fn malformed_and_foreign_packets_are_ignored() {
    let t0 = Instant::now();
    let mut c = client(t0);
    let (discover, _) = sent(&c.on_timeout(t0));
    let offer = reply(
        &discover,
        MessageType::Offer,
        ip("10.0.2.15"),
        lease_opts(3600),
    );

    let mutate = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut p = offer.clone();
        f(&mut p);
        p
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("truncated header", offer[..100].to_vec()),
        ("request, not reply", mutate(&|p| p[0] = 1)),
        ("bad magic", mutate(&|p| p[236] = 0)),
        ("foreign xid", mutate(&|p| p[4] ^= 0xff)),
        ("foreign chaddr", mutate(&|p| p[33] ^= 0xff)),
        // dhcproto would slice chaddr[..200] on this one.
        ("hostile hlen", mutate(&|p| p[2] = 200)),
        (
            "option runs past the end",
            mutate(&|p| {
                p.truncate(240);
                p.extend_from_slice(&[53, 1, 2, 54, 200, 10]);
            }),
        ),
        (
            "no message type",
            mutate(&|p| {
                p.truncate(240);
                p.push(255);
            }),
        ),
        (
            "offer of 0.0.0.0",
            reply(
                &discover,
                MessageType::Offer,
                Ipv4Addr::UNSPECIFIED,
                lease_opts(60),
            ),
        ),
        (
            "offer without server id",
            reply(&discover, MessageType::Offer, ip("10.0.2.15"), vec![]),
        ),
    ];
    for (name, packet) in cases {
        assert!(c.on_packet(t0, &packet).is_err(), "{name}");
        assert_eq!(c.phase(), Phase::Selecting, "{name}");
    }

    // Random corruption never panics and never leaves SELECTING by anything
    // but an OFFER that still decodes.
    let mut rng = fastrand::Rng::with_seed(42);
    for _ in 0..5000 {
        let mut c = client(t0);
        sent(&c.on_timeout(t0));
        let mut p = offer.clone();
        for _ in 0..rng.usize(1..8) {
            let i = rng.usize(..p.len());
            p[i] = rng.u8(..);
        }
        p.truncate(rng.usize(200..=p.len()));
        let _ = c.on_packet(t0, &p);
    }
}

#[test]
fn release_gives_the_lease_back_and_stops() {
    let t0 = Instant::now();
    let (mut c, lease, t) = bound(t0, lease_opts(3600));
    let actions = c.release(t);
    let (msg, to) = sent(&actions);
    assert_eq!(msg_type(&msg), MessageType::Release);
    assert_eq!(to, lease.server, "unicast to the lease's server");
    assert_eq!(msg.ciaddr(), lease.address);
    assert!(matches!(
        msg.opts().get(OptionCode::ServerIdentifier),
        Some(DhcpOption::ServerIdentifier(s)) if *s == lease.server
    ));
    assert!(matches!(actions.last(), Some(Action::Deconfigure(l)) if *l == lease));
    assert_eq!(c.deadline(), None, "a stopped client has no timer");
    // Nothing held: nothing to release.
    assert!(client(t0).release(t0).is_empty());
}
