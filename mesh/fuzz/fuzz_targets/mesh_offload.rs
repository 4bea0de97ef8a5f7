//! The packets a peer's WireGuard session decrypts are the peer's to
//! choose: the coalescer must take any of them, in any order, without a
//! panic, and hand every byte of a packet it did not join to the TUN as
//! it came. Cutting (what the TUN hands over) must refuse a header that
//! does not fit its packet rather than read past it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slate_mesh::offload::{Coalescer, Packets, VNET_HDR_LEN, VnetHdr, split};

fuzz_target!(|data: &[u8]| {
    // Packets: a length byte, then that many bytes, repeated.
    let mut coalescer = Coalescer::default();
    let mut rest = data;
    let mut pushed = 0;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        coalescer.push(&tail[..n]);
        pushed += 1;
        rest = &tail[n..];
    }
    coalescer.finish();
    let writes = coalescer.writes().count();
    assert!(writes <= pushed);
    for w in coalescer.writes() {
        assert!(w.len() >= VNET_HDR_LEN);
    }
    // The whole input as a TUN read: header, then packet.
    if let Some(hdr) = VnetHdr::parse(data) {
        let mut packet = data[VNET_HDR_LEN..].to_vec();
        let mut out = Packets::default();
        if split(hdr, &mut packet, &mut out).is_ok() {
            assert!(!out.is_empty());
        }
    }
});
