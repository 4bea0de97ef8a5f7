//! Sealed affiliate records and gossip bundles come from the network (the
//! discovery service, any mesh peer): whatever the bytes, `open` and
//! `merge_bundle` return an error or a result, never panic, and the table
//! stays within its bounds with this node's own record untouched.
#![no_main]

use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use slate_discovery::gossip::AffiliateTable;
use slate_discovery::record::{ClusterKeys, Record, mesh_address};

const ID: [u8; 32] = [1; 32];

static KEYS: LazyLock<Arc<ClusterKeys>> =
    LazyLock::new(|| Arc::new(ClusterKeys::new(&ID, &[2; 32])));

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// Valid records, so the table's merge rules run alongside the junk: this
/// node, and three others at two versions.
static VALID: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    let mut out = Vec::new();
    for (node, version) in [("self", 0), ("a", 0), ("a", 1), ("b", 0), ("c", 2)] {
        let public_key = [node.as_bytes()[0]; 32];
        let record = Record {
            node_id: node.into(),
            hostname: node.into(),
            public_key,
            mesh_address: mesh_address(&ID, &public_key),
            endpoints: vec!["192.0.2.1:51820".parse().unwrap()],
            networks: vec!["10.244.0.0/24".parse().unwrap()],
            control_plane: None,
            seen: vec![],
            issued_ms: 1_800_000_000_000 + version,
            ttl_secs: 300,
        };
        out.push(KEYS.seal(&record).unwrap());
    }
    out
});

fuzz_target!(|data: &[u8]| {
    let _ = KEYS.open(data, now());
    let _ = Record::from_plaintext(data);

    let mut table = AffiliateTable::new(KEYS.clone(), "self", 3);
    let own_record = KEYS.open(&VALID[0], now()).unwrap();
    let own = table.set_own(own_record).unwrap().to_vec();
    // The first byte picks which valid records arrive before the bundle.
    let pick = data.first().copied().unwrap_or(0);
    let valid = VALID
        .iter()
        .enumerate()
        .filter(|(i, _)| pick & (1 << i) != 0);
    table.merge_all(valid.map(|(_, v)| v.as_slice()), now());
    table.merge_bundle(data, now());
    assert!(table.len() <= 3);
    assert_eq!(table.own().unwrap().sealed, own);
    let bundle = table.bundle(now());
    let mut copy = AffiliateTable::new(KEYS.clone(), "other", 8);
    let again = copy.merge_bundle(&bundle, now());
    assert_eq!(again.refused, 0);
    assert!(again.framing.is_none());
});
