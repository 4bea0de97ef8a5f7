use super::*;
use netlink_packet_core::ParseableParametrized as _;
use netlink_packet_generic::GenlHeader;

fn config(key: u8, endpoints: &[&str], ips: &[&str]) -> PeerConfig {
    PeerConfig {
        public_key: [key; 32],
        endpoints: endpoints.iter().map(|e| e.parse().unwrap()).collect(),
        allowed_ips: ips.iter().map(|n| n.parse().unwrap()).collect(),
        persistent_keepalive: Some(25),
        relays: vec![],
    }
}

fn kernel_peer(key: u8, endpoint: Option<&str>) -> KernelPeer {
    KernelPeer {
        public_key: [key; 32],
        endpoint: endpoint.map(|e| e.parse().unwrap()),
        allowed_ips: vec![],
        persistent_keepalive: None,
        tx_bytes: 0,
        rx_bytes: 0,
        last_handshake: None,
    }
}

fn key_of(p: &WireguardPeer) -> [u8; 32] {
    p.iter()
        .find_map(|a| match a {
            WireguardPeerAttribute::PublicKey(k) => Some(*k),
            _ => None,
        })
        .unwrap()
}

fn endpoint_of(p: &WireguardPeer) -> Option<SocketAddr> {
    p.iter().find_map(|a| match a {
        WireguardPeerAttribute::Endpoint(e) => Some(*e),
        _ => None,
    })
}

/// Serialises like the kernel would see it and parses it back with
/// the crate, as a dump answer would be.
fn round_trip(attributes: Vec<WireguardAttribute>) -> Vec<WireguardAttribute> {
    let msg = genl::raw_request(
        message(WireguardCmd::SetDevice, attributes),
        0x20,
        NLM_F_REQUEST,
    );
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    assert_eq!(&buf[0..4], &(buf.len() as u32).to_ne_bytes(), "length");
    assert_eq!(&buf[6..8], &NLM_F_REQUEST.to_ne_bytes(), "flags");
    // Netlink header (16), then the generic header: cmd, version.
    assert_eq!(&buf[4..6], &0x20u16.to_ne_bytes(), "family id as type");
    assert_eq!((buf[16], buf[17]), (1, 1), "WG_CMD_SET_DEVICE, version 1");
    let genl_header = GenlHeader {
        cmd: buf[16],
        version: buf[17],
    };
    WireguardMessage::parse_with_param(&buf[20..], genl_header)
        .unwrap()
        .attributes
}

#[test]
fn a_set_message_has_the_header_and_parses_back() {
    let p = config(7, &["192.0.2.1:51820"], &["fd00::1/128", "10.1.0.0/16"]);
    let attrs = vec![
        WireguardAttribute::IfIndex(3),
        WireguardAttribute::Peers(peer_entries(&p, Some(p.endpoints[0]), MESSAGE_BUDGET)),
    ];
    let back = round_trip(attrs.clone());
    assert_eq!(back, attrs);
    let mut reader = DumpReader::default();
    reader.add(&back).unwrap();
    assert_eq!(reader.peers.len(), 1);
    let got = &reader.peers[0];
    assert_eq!(got.public_key, p.public_key);
    assert_eq!(got.endpoint, Some(p.endpoints[0]));
    assert_eq!(got.allowed_ips, p.allowed_ips);
    assert_eq!(got.persistent_keepalive, Some(25));
}

#[test]
fn allowed_ips_are_sent_as_networks() {
    let p = config(1, &[], &["10.1.2.3/16"]);
    let entries = peer_entries(&p, None, MESSAGE_BUDGET);
    let mut reader = DumpReader::default();
    reader.add(&[WireguardAttribute::Peers(entries)]).unwrap();
    assert_eq!(
        reader.peers[0].allowed_ips,
        vec!["10.1.0.0/16".parse::<IpNet>().unwrap()]
    );
    assert_eq!(reader.peers[0].endpoint, None);
}

#[test]
fn the_diff_removes_adds_and_keeps_a_chosen_endpoint() {
    let current = [
        kernel_peer(1, Some("192.0.2.9:51820")),
        kernel_peer(2, Some("192.0.2.2:51820")),
        kernel_peer(3, Some("198.51.100.7:4000")),
    ];
    let wanted = [
        // Its current endpoint is a candidate: kept.
        config(2, &["192.0.2.1:51820", "192.0.2.2:51820"], &["fd00::2/128"]),
        // Its current endpoint is not (a NAT mapping it roamed to):
        // kept too.
        config(3, &["192.0.2.3:51820"], &["fd00::3/128"]),
        // New.
        config(4, &["192.0.2.4:51820"], &["fd00::4/128"]),
    ];
    let entries = diff(&current, &wanted);
    let keys: Vec<u8> = entries.iter().map(|e| key_of(e)[0]).collect();
    assert_eq!(keys, [1, 2, 3, 4]);
    assert!(entries[0].contains(&WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe)));
    assert_eq!(entries[0].len(), 2, "a removal carries nothing else");
    assert_eq!(endpoint_of(&entries[1]), None);
    assert_eq!(endpoint_of(&entries[2]), None);
    assert_eq!(
        endpoint_of(&entries[3]),
        Some("192.0.2.4:51820".parse().unwrap())
    );
    for e in &entries[1..] {
        assert!(e.contains(&WireguardPeerAttribute::Flags(
            WireguardPeerFlags::ReplaceAllowedIps
        )));
        assert!(e.contains(&WireguardPeerAttribute::PersistentKeepalive(25)));
    }
}

#[test]
fn a_long_allowed_ip_list_is_split_and_merges_back() {
    let ips: Vec<String> = (0..2000u32)
        .map(|i| format!("fd00::{:x}:{:x}/128", i >> 8, i & 0xff))
        .collect();
    let ip_refs: Vec<&str> = ips.iter().map(String::as_str).collect();
    let big = config(9, &["[2001:db8::1]:51820"], &ip_refs);
    let small = config(8, &["192.0.2.8:51820"], &["fd00::8/128"]);
    let mut entries = peer_entries(&small, Some(small.endpoints[0]), MESSAGE_BUDGET);
    entries.extend(peer_entries(&big, Some(big.endpoints[0]), MESSAGE_BUDGET));
    assert!(entries.len() > 3, "{} entries", entries.len());
    for e in &entries {
        assert!(e.buffer_len() <= MESSAGE_BUDGET, "{}", e.buffer_len());
    }
    // Only the first entry of a peer replaces its allowed IPs.
    let replacing = entries
        .iter()
        .filter(|e| {
            e.contains(&WireguardPeerAttribute::Flags(
                WireguardPeerFlags::ReplaceAllowedIps,
            ))
        })
        .count();
    assert_eq!(replacing, 2);
    let lists = pack(entries, MESSAGE_BUDGET);
    assert!(lists.len() > 1);
    let mut reader = DumpReader::default();
    for list in lists {
        let peers = WireguardAttribute::Peers(list);
        assert!(
            peers.buffer_len() <= MESSAGE_BUDGET + 4,
            "{}",
            peers.buffer_len()
        );
        // Each list as one message, as the kernel's dump would come.
        reader.add(&round_trip(vec![peers])).unwrap();
    }
    assert_eq!(reader.peers.len(), 2);
    assert_eq!(reader.peers[0].allowed_ips, small.allowed_ips);
    assert_eq!(reader.peers[1].allowed_ips, big.allowed_ips);
    assert_eq!(reader.peers[1].endpoint, Some(big.endpoints[0]));
}

#[test]
fn surprises_from_the_kernel_are_errors_or_skipped() {
    let mut reader = DumpReader::default();
    let keyless = WireguardPeer(vec![WireguardPeerAttribute::RxBytes(1)]);
    assert!(
        reader
            .add(&[WireguardAttribute::Peers(vec![keyless])])
            .is_err()
    );

    let bad_ip = WireguardAllowedIp(vec![
        WireguardAllowedIpAttr::IpAddr("10.0.0.0".parse().unwrap()),
        WireguardAllowedIpAttr::Cidr(99),
    ]);
    let peer = WireguardPeer(vec![
        WireguardPeerAttribute::PublicKey([5; 32]),
        WireguardPeerAttribute::AllowedIps(vec![bad_ip]),
        WireguardPeerAttribute::LastHandshake(WireguardTimeSpec {
            seconds: -1,
            nano_seconds: 0,
        }),
    ]);
    reader
        .add(&[WireguardAttribute::Peers(vec![peer])])
        .unwrap();
    assert_eq!(reader.peers[0].allowed_ips, vec![]);
    assert_eq!(reader.peers[0].last_handshake, None);

    let mut full = DumpReader {
        peers: (0..MAX_PEERS).map(|_| kernel_peer(0, None)).collect(),
        allowed_ips: 0,
    };
    let one_more = WireguardPeer(vec![WireguardPeerAttribute::PublicKey([1; 32])]);
    assert!(
        full.add(&[WireguardAttribute::Peers(vec![one_more])])
            .is_err()
    );
}

#[test]
fn handshake_times() {
    let t = |seconds, nano_seconds| {
        handshake(&WireguardTimeSpec {
            seconds,
            nano_seconds,
        })
    };
    assert_eq!(t(0, 0), None);
    assert_eq!(
        t(10, 5),
        Some(SystemTime::UNIX_EPOCH + Duration::new(10, 5))
    );
    assert_eq!(t(10, 1_000_000_000), None);
    assert_eq!(t(i64::MIN, 0), None);
}

#[test]
fn unsupported_says_what_to_do() {
    let e = KernelError::Unsupported {
        link: "slmesh0".into(),
        reason: "the link kind wireguard is unknown".into(),
    };
    let text = e.to_string();
    assert!(
        text.starts_with("slmesh0: this kernel has no WireGuard support"),
        "{text}"
    );
    assert!(text.contains("userspace mesh"), "{text}");
}
