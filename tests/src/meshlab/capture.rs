//! The router's packet capture, read back: tcpdump's pcap format.

use std::net::Ipv4Addr;
use std::path::Path;

/// An IPv4 packet seen by the capture (ports for TCP and UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// IP protocol number: 6 TCP, 17 UDP, 1 ICMP.
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    /// For an ICMP error (unreachable, time exceeded, parameter problem):
    /// the protocol and ports of the packet it answers, from the headers
    /// it quotes.
    pub quoted: Option<(u8, u16, u16)>,
}

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;

/// The IPv4 packets of a pcap file (tcpdump's own format, either byte
/// order; Ethernet, Linux cooked v1 or v2 link headers, which is what
/// `-i any` writes). Other protocols (ARP, IPv6) are skipped; a record
/// cut short at the end (tcpdump still writing) ends the list.
pub fn read_pcap(path: &Path) -> Result<Vec<Packet>, String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if data.len() < 24 {
        return Err(format!("{}: no pcap header yet", path.display()));
    }
    let little = match data[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => return Err(format!("{}: not a pcap file", path.display())),
    };
    let u32_at = |at: usize| {
        let b: [u8; 4] = data[at..at + 4].try_into().expect("4 bytes");
        if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let be16 = |b: &[u8], at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    // Where the ethertype is and where the network header starts.
    let (ethertype_at, header_len) = match u32_at(20) {
        1 => (12, 14),
        113 => (14, 16),
        276 => (0, 20),
        other => return Err(format!("{}: link type {other}", path.display())),
    };
    let mut packets = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let captured = u32_at(at + 8) as usize;
        let frame = match data.get(at + 16..at + 16 + captured) {
            Some(f) => f,
            None => break,
        };
        at += 16 + captured;
        if frame.len() < header_len + 20 || be16(frame, ethertype_at) != 0x0800 {
            continue;
        }
        let ip = &frame[header_len..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let proto = ip[9];
        let addr = |at: usize| Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]);
        let (sport, dport) = match ip.get(ihl..ihl + 4) {
            Some(l4) if proto == TCP || proto == UDP => (be16(l4, 0), be16(l4, 2)),
            _ => (0, 0),
        };
        // An ICMP error quotes the IP header and 8 bytes of what it answers.
        let quoted = match ip.get(ihl..) {
            Some(icmp) if proto == ICMP && matches!(icmp.first(), Some(3 | 11 | 12)) => {
                icmp.get(8..).and_then(|inner| {
                    let inner_ihl = usize::from(inner.first()? & 0x0f) * 4;
                    let l4 = inner.get(inner_ihl..inner_ihl + 4)?;
                    Some((*inner.get(9)?, be16(l4, 0), be16(l4, 2)))
                })
            }
            _ => None,
        };
        packets.push(Packet {
            src: addr(12),
            dst: addr(16),
            proto,
            sport,
            dport,
            quoted,
        });
    }
    Ok(packets)
}
