//! Any datagrams a DHCP server (or anyone on the link) sends must leave
//! networkd's client running: they may be ignored, never panic.
//!
//! The input is a sequence of packets, each prefixed by a 2-byte length.
//! Each packet gets the client's xid, MAC, BOOTREPLY opcode and magic cookie
//! patched in, so the fuzzer spends its time past the first sanity checks,
//! in option decoding and in the SELECTING → REQUESTING → BOUND transitions.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use slate_networkd::dhcp::state::{Action, Client};

const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let mut client = Client::new(&MAC, None, fastrand::Rng::with_seed(1), now);
    let mut xid = xid_of(&client.on_timeout(now));
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let mut packet = rest[2..2 + len].to_vec();
        rest = &rest[2 + len..];
        if packet.len() >= 240 {
            packet[0] = 2;
            packet[4..8].copy_from_slice(&xid);
            packet[28..34].copy_from_slice(&MAC);
            packet[236..240].copy_from_slice(&[99, 130, 83, 99]);
        }
        if let Ok(actions) = client.on_packet(now, &packet) {
            if let Some(sent) = xid_of_opt(&actions) {
                xid = sent;
            }
        }
        now += Duration::from_secs(1);
    }
    // Timers after whatever state the packets left.
    let _ = client.on_timeout(now + Duration::from_secs(86_400));
});

fn xid_of(actions: &[Action]) -> [u8; 4] {
    xid_of_opt(actions).unwrap_or_default()
}

fn xid_of_opt(actions: &[Action]) -> Option<[u8; 4]> {
    actions.iter().find_map(|a| match a {
        Action::Send { bytes, .. } if bytes.len() >= 8 => bytes[4..8].try_into().ok(),
        _ => None,
    })
}
