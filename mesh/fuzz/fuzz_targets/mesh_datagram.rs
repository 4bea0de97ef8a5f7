//! Any datagram on the mesh port (UDP 51820) must be classified without a
//! panic: WireGuard, a relay frame or gossip, or junk. Gossip frames go
//! on, as the controller takes them, into the record table, which must
//! refuse what does not open and stay bounded.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use slate_discovery::gossip::AffiliateTable;
use slate_discovery::record::ClusterKeys;
use slate_mesh::wire::{self, Message};

fuzz_target!(|data: &[u8]| {
    let Ok(message) = wire::parse(data) else {
        return;
    };
    match message {
        Message::WireGuard(d) => assert_eq!(d, data),
        Message::ToRelay { inner, .. } | Message::FromRelay { inner, .. } => {
            // Only WireGuard is relayed.
            assert!((1..=4).contains(&inner[0]) && inner[1..4] == [0, 0, 0]);
        }
        Message::Gossip(sealed) => {
            let keys = Arc::new(ClusterKeys::new(&[7; 32], &[9; 32]));
            let mut table = AffiliateTable::new(keys, "fuzz", 4);
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
            let _ = table.merge_sealed(sealed, now);
            assert!(table.len() <= 4);
        }
    }
});
