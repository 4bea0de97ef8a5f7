//! Any datagrams on the DHCPv6 client port must leave networkd's client
//! running: they may be ignored, never panic.
//!
//! The input is a sequence of packets, each prefixed by a 2-byte length.
//! Each packet gets the client's transaction id patched in and our
//! ClientId option appended, so the fuzzer spends its time in option
//! decoding (IA_NA, IAADDR, status codes, DNS names) and in the
//! SOLICIT → REQUEST → BOUND → RENEW transitions.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use slate_networkd::dhcp6::state::{Action, Client};

const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
/// Option 1 (ClientId), length 10, DUID-LL of `MAC`.
const CLIENT_ID: [u8; 14] = [0, 1, 0, 10, 0, 3, 0, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56];

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let mut client = Client::new(&MAC, fastrand::Rng::with_seed(1), now);
    let mut xid = xid_of(&client.on_timeout(now)).unwrap_or_default();
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let mut packet = rest[2..2 + len].to_vec();
        rest = &rest[2 + len..];
        if packet.len() >= 4 {
            packet[1..4].copy_from_slice(&xid);
            packet.extend_from_slice(&CLIENT_ID);
        }
        if let Ok(actions) = client.on_packet(now, &packet) {
            if let Some(sent) = xid_of(&actions) {
                xid = sent;
            }
        }
        now += Duration::from_secs(1);
    }
    // Timers after whatever state the packets left.
    for _ in 0..64 {
        match client.deadline() {
            Some(d) => {
                let _ = client.on_timeout(d);
            }
            None => break,
        }
    }
});

fn xid_of(actions: &[Action]) -> Option<[u8; 3]> {
    actions.iter().find_map(|a| match a {
        Action::Send { bytes, .. } if bytes.len() >= 4 => bytes[1..4].try_into().ok(),
        _ => None,
    })
}
