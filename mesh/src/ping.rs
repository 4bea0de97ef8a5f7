//! The liveness ping: an ICMPv6 echo request from this node's mesh address
//! to a peer's, sent inside the tunnel to a peer that has been quiet.
//!
//! Why: a peer counts as up while authenticated datagrams arrive, and an
//! idle peer's only datagrams are its persistent keepalives. The kernel's
//! WireGuard restarts its keepalive timer whenever it *receives* a packet,
//! so a kernel peer that hears our keepalives every 25 s never sends its
//! own, and would look dead after 40 s. A data packet (this ping) makes
//! any WireGuard answer within 10 s (its passive keepalive), and the
//! peer's IPv6 stack answers the echo at once.

use std::net::Ipv6Addr;

use super::offload::{fold, sum};

/// After this long without a datagram from a peer that is up, it is
/// pinged (and again as long as the silence lasts): well within
/// [`super::select::STALE`], with room for the 10 s passive keepalive.
pub const PING_AFTER: std::time::Duration = std::time::Duration::from_secs(15);

const ICMPV6: u8 = 58;
const ECHO_REQUEST: u8 = 128;

/// An IPv6 packet holding an ICMPv6 echo request, sequence `seq`.
pub fn echo_request(from: Ipv6Addr, to: Ipv6Addr, seq: u16) -> Vec<u8> {
    let mut p = vec![0u8; 40 + 8];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&8u16.to_be_bytes());
    p[6] = ICMPV6;
    p[7] = 64;
    p[8..24].copy_from_slice(&from.octets());
    p[24..40].copy_from_slice(&to.octets());
    p[40] = ECHO_REQUEST;
    // Identifier "SL", then the sequence number.
    p[44..46].copy_from_slice(b"SL");
    p[46..48].copy_from_slice(&seq.to_be_bytes());
    let pseudo = sum(&p[8..40], u64::from(ICMPV6) + 8);
    let checksum = !fold(sum(&p[40..], pseudo));
    p[42..44].copy_from_slice(&checksum.to_be_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_request_a_stack_would_answer() {
        let (from, to): (Ipv6Addr, Ipv6Addr) =
            ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        let p = echo_request(from, to, 7);
        assert_eq!(p.len(), 48);
        assert_eq!(p[0] >> 4, 6);
        assert_eq!(u16::from_be_bytes([p[4], p[5]]), 8, "payload length");
        assert_eq!((p[6], p[40], p[41]), (58, 128, 0));
        // The checksum over pseudo-header and message adds up.
        let pseudo = sum(&p[8..40], 58 + 8);
        assert_eq!(fold(sum(&p[40..], pseudo)), 0xffff);
        assert_eq!(&p[46..48], &[0, 7]);
    }
}
