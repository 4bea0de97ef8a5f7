use std::time::{Duration, SystemTime};

use super::*;

pub(crate) const ID: [u8; 32] = [1; 32];
pub(crate) const SECRET: [u8; 32] = [2; 32];

pub(crate) fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

pub(crate) fn record(keys: &ClusterKeys, node: &str, issued: SystemTime) -> Record {
    let mut public_key = [0u8; 32];
    public_key[..node.len().min(32)].copy_from_slice(&node.as_bytes()[..node.len().min(32)]);
    Record {
        node_id: node.into(),
        hostname: format!("{node}.example"),
        public_key,
        mesh_address: keys.mesh_address(&public_key),
        endpoints: vec![
            "192.0.2.10:51820".parse().unwrap(),
            "[2001:db8::1]:51820".parse().unwrap(),
        ],
        networks: vec![
            "192.0.2.10/32".parse().unwrap(),
            "10.244.1.0/24".parse().unwrap(),
        ],
        control_plane: Some(ControlPlane {
            api_endpoint: "192.0.2.10:6443".parse().unwrap(),
        }),
        seen: vec![Seen {
            public_key: [3; 32],
            endpoint: "203.0.113.5:40000".parse().unwrap(),
        }],
        issued_ms: unix_ms(issued),
        ttl_secs: 300,
    }
}

#[test]
fn seal_then_open_gives_the_record_back() {
    let keys = ClusterKeys::new(&ID, &SECRET);
    let r = record(&keys, "node-a", now());
    let sealed = keys.seal(&r).unwrap();
    assert!(sealed.len() <= MAX_SEALED);
    assert_eq!(keys.open(&sealed, now()).unwrap(), r);
    // Two seals of one record differ (fresh nonce) and both open.
    let again = keys.seal(&r).unwrap();
    assert_ne!(sealed, again);
    assert_eq!(keys.open(&again, now()).unwrap(), r);
}

#[test]
fn keys_come_from_the_config_strings() {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let keys = ClusterKeys::from_config(&b64(&ID), &b64(&SECRET)).unwrap();
    assert_eq!(
        keys.cluster_key(),
        ClusterKeys::new(&ID, &SECRET).cluster_key()
    );
    assert!(matches!(
        ClusterKeys::from_config("not base64!", &b64(&SECRET)),
        Err(KeyError::Base64 {
            field: "cluster.id",
            ..
        })
    ));
    assert!(matches!(
        ClusterKeys::from_config(&b64(&ID), &b64(&[0; 16])),
        Err(KeyError::Length {
            field: "cluster.secret",
            len: 16
        })
    ));
}

#[test]
fn derived_names_reveal_nothing_and_differ_by_secret() {
    let keys = ClusterKeys::new(&ID, &SECRET);
    let other = ClusterKeys::new(&ID, &[3; 32]);
    assert_ne!(keys.cluster_key(), other.cluster_key());
    assert_eq!(keys.cluster_key().len(), 43);
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    assert_ne!(keys.cluster_key(), b64.encode(SECRET));
    assert_ne!(keys.cluster_key(), b64.encode(ID));
    assert_eq!(keys.affiliate_id("node-a"), keys.affiliate_id("node-a"));
    assert_ne!(keys.affiliate_id("node-a"), keys.affiliate_id("node-b"));
    assert!(!keys.affiliate_id("node-a").contains("node"));
}

#[test]
fn mesh_addresses_are_ula_in_one_cluster_prefix() {
    let a = mesh_address(&ID, &[7; 32]);
    let b = mesh_address(&ID, &[8; 32]);
    let other_cluster = mesh_address(&[9; 32], &[7; 32]);
    assert_eq!(a.octets()[0], 0xfd);
    assert_eq!(a.octets()[..8], b.octets()[..8], "same /64");
    assert_ne!(a, b);
    assert_ne!(a.octets()[..8], other_cluster.octets()[..8]);
    assert_eq!(a, mesh_address(&ID, &[7; 32]), "deterministic");
}

#[test]
fn a_record_sealed_with_another_secret_is_refused() {
    let keys = ClusterKeys::new(&ID, &SECRET);
    let other = ClusterKeys::new(&ID, &[3; 32]);
    let sealed = other.seal(&record(&other, "intruder", now())).unwrap();
    assert!(matches!(
        keys.open(&sealed, now()),
        Err(OpenError::WrongKey)
    ));
}

#[test]
fn a_record_of_another_cluster_is_refused() {
    let keys = ClusterKeys::new(&ID, &SECRET);
    // Same secret, other cluster id: still not ours.
    let other = ClusterKeys::new(&[9; 32], &SECRET);
    let sealed = other.seal(&record(&other, "node-x", now())).unwrap();
    assert!(matches!(
        keys.open(&sealed, now()),
        Err(OpenError::WrongCluster)
    ));
}

#[test]
fn every_truncation_is_refused() {
    let keys = ClusterKeys::new(&ID, &SECRET);
    let sealed = keys.seal(&record(&keys, "node-a", now())).unwrap();
    for len in 0..sealed.len() {
        match keys.open(&sealed[..len], now()) {
            Err(OpenError::Truncated { len: l }) => assert!(l < MIN_SEALED && l == len),
            Err(OpenError::Forged) => assert!(len >= MIN_SEALED),
            other => panic!("truncated to {len}: {other:?}"),
        }
    }
}

#[test]
fn every_bit_flip_is_refused() {
    let keys = ClusterKeys::new(&ID, &SECRET);
    let sealed = keys.seal(&record(&keys, "node-a", now())).unwrap();
    for bit in 0..sealed.len() * 8 {
        let mut bad = sealed.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let err = keys.open(&bad, now()).unwrap_err();
        let expected = match bit / 8 {
            0 => matches!(err, OpenError::UnknownFormat(_)),
            1..=8 => matches!(err, OpenError::WrongCluster),
            9..=12 => matches!(err, OpenError::WrongKey),
            _ => matches!(err, OpenError::Forged),
        };
        assert!(expected, "bit {bit}: {err:?}");
    }
}

#[test]
fn oversized_input_is_refused_before_any_work() {
    let keys = ClusterKeys::new(&ID, &SECRET);
    let big = vec![FORMAT; MAX_SEALED + 1];
    assert!(matches!(
        keys.open(&big, now()),
        Err(OpenError::TooLarge { len }) if len == MAX_SEALED + 1
    ));
}

#[test]
fn a_record_too_large_to_seal_is_an_error() {
    let keys = ClusterKeys::new(&ID, &SECRET);
    let mut r = record(&keys, "node-a", now());
    r.hostname = "h".repeat(253);
    r.networks = (0..MAX_NETWORKS)
        .map(|i| {
            format!("2001:db8:{i:x}:ffff:ffff:ffff::/96")
                .parse()
                .unwrap()
        })
        .collect();
    r.endpoints = (0..MAX_ENDPOINTS)
        .map(|i| {
            format!("[2001:db8:{i:x}:ffff:ffff:ffff:ffff:ffff]:65535")
                .parse()
                .unwrap()
        })
        .collect();
    assert!(matches!(keys.seal(&r), Err(SealError::TooLarge { .. })));
}

#[test]
fn expired_and_future_records_are_refused() {
    let keys = ClusterKeys::new(&ID, &SECRET);
    let r = record(&keys, "node-a", now());
    let sealed = keys.seal(&r).unwrap();
    let at_expiry = now() + Duration::from_secs(300);
    assert!(matches!(
        keys.open(&sealed, at_expiry),
        Err(OpenError::Expired { .. })
    ));
    assert!(
        keys.open(&sealed, at_expiry - Duration::from_millis(1))
            .is_ok()
    );
    let early = now() - MAX_CLOCK_SKEW - Duration::from_millis(1);
    assert!(matches!(
        keys.open(&sealed, early),
        Err(OpenError::FromTheFuture { .. })
    ));
    assert!(keys.open(&sealed, now() - MAX_CLOCK_SKEW).is_ok());
}

#[test]
fn invalid_records_are_refused_on_both_sides() {
    let keys = ClusterKeys::new(&ID, &SECRET);
    let good = record(&keys, "node-a", now());
    type Mutation = Box<dyn Fn(&mut Record)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("empty node id", Box::new(|r| r.node_id.clear())),
        ("control char", Box::new(|r| r.hostname = "a\nb".into())),
        ("zero ttl", Box::new(|r| r.ttl_secs = 0)),
        ("long ttl", Box::new(|r| r.ttl_secs = 3601)),
        (
            "endpoints",
            Box::new(|r| r.endpoints = vec![r.endpoints[0]; MAX_ENDPOINTS + 1]),
        ),
    ];
    for (name, mutate) in cases {
        let mut r = good.clone();
        mutate(&mut r);
        assert!(
            matches!(keys.seal(&r), Err(SealError::Invalid(_))),
            "{name}"
        );
    }
    let mut wrong_addr = good.clone();
    wrong_addr.mesh_address = "fd00::1".parse().unwrap();
    assert!(matches!(
        keys.seal(&wrong_addr),
        Err(SealError::AddressMismatch)
    ));
    assert!(matches!(
        Record::from_plaintext(b"{\"nodeId\":1}"),
        Err(OpenError::Malformed(_))
    ));
}

#[test]
fn plaintext_ignores_unknown_fields_and_omits_absent_control_plane() {
    let keys = ClusterKeys::new(&ID, &SECRET);
    let mut r = record(&keys, "node-a", now());
    r.control_plane = None;
    let mut json: serde_json::Value = serde_json::to_value(&r).unwrap();
    assert!(json.get("controlPlane").is_none());
    json["someFutureField"] = serde_json::json!([1, 2, 3]);
    let back = Record::from_plaintext(json.to_string().as_bytes()).unwrap();
    assert_eq!(back, r);
}

#[test]
fn versions_only_go_up() {
    let t = now();
    let v1 = next_version(None, t);
    assert_eq!(v1, unix_ms(t));
    assert_eq!(next_version(Some(v1), t), v1 + 1);
    assert_eq!(next_version(Some(v1), t - Duration::from_secs(10)), v1 + 1);
    assert_eq!(
        next_version(Some(v1), t + Duration::from_secs(1)),
        v1 + 1000
    );
}
