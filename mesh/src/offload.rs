//! TCP segmentation and coalescing for the mesh's TUN, in userspace.
//!
//! The TUN is opened with a virtio-net header and TSO turned on
//! ([`super::tun`]): the kernel hands the device TCP segments of up to
//! 64 KiB, with a header saying how to cut them, instead of one packet of
//! at most the MTU per read, and takes such segments back the same way.
//! - [`split`] cuts what the kernel sends into packets of the MTU, each
//!   with its own IP length, TCP sequence number and checksums, because
//!   WireGuard encrypts packet by packet and the peer may be any WireGuard.
//! - [`Coalescer`] joins decrypted packets of one TCP flow that follow one
//!   another back into one segment for the kernel, as GRO does on a NIC.
//!
//! Why: a 64 KiB segment costs one TUN read instead of ~45, and the TCP
//! stacks on both sides handle one segment instead of ~45. The mesh bench
//! (docs/mesh-datapath.md) was bound by exactly that per-packet cost.
//!
//! Written here: the packet arithmetic is small (RFC 1071 sums, a few
//! header fields), and the crates that do it for a TUN (tun-rs's port of
//! wireguard-go's offload code) do it for their own device type only,
//! which networkd does not use (see [`super::tun`]).

use std::ops::Range;

/// `struct virtio_net_hdr` (legacy, host byte order): what precedes every
/// packet read from or written to the TUN.
pub const VNET_HDR_LEN: usize = 10;

const F_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
/// Set with the TCP types when the segment carries ECN's CWR.
const GSO_ECN: u8 = 0x80;

const TCP: u8 = 6;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_URG: u8 = 0x20;
const TCP_ECE: u8 = 0x40;
const TCP_CWR: u8 = 0x80;
/// Where TCP keeps its checksum, from the start of its header.
const TCP_CSUM_OFFSET: usize = 16;

/// The most packets joined into one segment (the kernel's GRO limit).
const MAX_JOINED: usize = 64;
/// IPv4's total length and IPv6's payload length are 16 bits.
const MAX_SEGMENT: usize = 65535;

/// The virtio-net header of one packet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        let b: &[u8; VNET_HDR_LEN] = b.get(..VNET_HDR_LEN)?.try_into().ok()?;
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    pub fn write(&self, b: &mut [u8]) {
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
    }
}

/// Why a packet from the kernel could not be cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("GSO type {0} is not TCP")]
    GsoType(u8),
    #[error("checksum or header offsets outside the packet")]
    Offsets,
    #[error("a TCP segment without a readable IP and TCP header")]
    Headers,
}

/// Packets, back to back in one buffer.
#[derive(Debug, Default)]
pub struct Packets {
    bytes: Vec<u8>,
    ranges: Vec<Range<usize>>,
}

impl Packets {
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ranges.clear();
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn get(&self, i: usize) -> &[u8] {
        &self.bytes[self.ranges[i].clone()]
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.ranges.iter().map(|r| &self.bytes[r.clone()])
    }

    fn push(&mut self, packet: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(packet);
        self.ranges.push(start..self.bytes.len());
    }
}

/// Cuts one packet from the TUN (`packet`, after its header `hdr`) into
/// packets of at most the MTU, appended to `out`, with finished checksums.
pub fn split(hdr: VnetHdr, packet: &mut [u8], out: &mut Packets) -> Result<(), SplitError> {
    let gso_type = hdr.gso_type & !GSO_ECN;
    if gso_type == GSO_NONE {
        if hdr.flags & F_NEEDS_CSUM != 0 {
            finish_checksum(packet, hdr.csum_start.into(), hdr.csum_offset.into())?;
        }
        out.push(packet);
        return Ok(());
    }
    if gso_type != GSO_TCPV4 && gso_type != GSO_TCPV6 {
        return Err(SplitError::GsoType(hdr.gso_type));
    }
    let v6 = gso_type == GSO_TCPV6;
    // The kernel puts the TCP header at csum_start (after any IPv6
    // extension headers).
    let tcp = usize::from(hdr.csum_start);
    let min_ip = if v6 { 40 } else { 20 };
    let version = packet.first().map(|b| b >> 4);
    if tcp < min_ip || version != Some(if v6 { 6 } else { 4 }) || packet.len() < tcp + 20 {
        return Err(SplitError::Headers);
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    if !v6 && (ihl < 20 || ihl > tcp) {
        return Err(SplitError::Headers);
    }
    let tcp_len = usize::from(packet[tcp + 12] >> 4) * 4;
    let headers = tcp + tcp_len;
    if tcp_len < 20 || packet.len() < headers {
        return Err(SplitError::Headers);
    }
    let mss = usize::from(hdr.gso_size);
    if mss == 0 {
        return Err(SplitError::Offsets);
    }
    let seq = u32::from_be_bytes(packet[tcp + 4..tcp + 8].try_into().expect("4 bytes"));
    let id = u16::from_be_bytes([packet[4], packet[5]]);
    let flags = packet[tcp + 13];
    let (head, payload) = packet.split_at(headers);
    let count = payload.len().div_ceil(mss).max(1);
    for i in 0..count {
        let chunk = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
        let start = out.bytes.len();
        out.bytes.extend_from_slice(head);
        out.bytes.extend_from_slice(chunk);
        let seg = &mut out.bytes[start..];
        let total = seg.len();
        if v6 {
            put_u16(seg, 4, (total - 40) as u16);
        } else {
            put_u16(seg, 2, total as u16);
            put_u16(seg, 4, id.wrapping_add(i as u16));
            ipv4_header_checksum(seg);
        }
        let offset = u32::try_from(i * mss).unwrap_or(u32::MAX);
        seg[tcp + 4..tcp + 8].copy_from_slice(&seq.wrapping_add(offset).to_be_bytes());
        let mut f = flags;
        if i + 1 < count {
            f &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            f &= !TCP_CWR;
        }
        seg[tcp + 13] = f;
        tcp_checksum(seg, tcp, v6);
        out.ranges.push(start..out.bytes.len());
    }
    Ok(())
}

/// Completes a checksum the kernel left partial: the sum of everything
/// from `start`, stored at `start + offset` (which holds the seed).
fn finish_checksum(packet: &mut [u8], start: usize, offset: usize) -> Result<(), SplitError> {
    let at = start + offset;
    if at + 2 > packet.len() {
        return Err(SplitError::Offsets);
    }
    // A sum of zero is sent as 0xffff, as the kernel does: for UDP, zero
    // would mean "no checksum" (and is invalid over IPv6).
    let sum = match !fold(sum(&packet[start..], 0)) {
        0 => 0xffff,
        s => s,
    };
    put_u16(packet, at, sum);
    Ok(())
}

/// A TCP segment's IP and TCP header sizes, if it is a plain data segment
/// that may be joined to its neighbours: IPv4 without options or
/// fragments, or IPv6 without extension headers; only ACK (and PSH) set;
/// some payload.
#[derive(Debug, Clone, Copy)]
struct DataSegment {
    v6: bool,
    ip: usize,
    tcp: usize,
    payload: usize,
    seq: u32,
    psh: bool,
}

fn data_segment(p: &[u8]) -> Option<DataSegment> {
    let (v6, ip) = match p.first()? >> 4 {
        4 if p.len() >= 20 && p[0] & 0x0f == 5 && p[9] == TCP => {
            // Fragments (MF or an offset) are never joined.
            let frag = u16::from_be_bytes([p[6], p[7]]);
            if frag & 0x3fff != 0 || usize::from(u16::from_be_bytes([p[2], p[3]])) != p.len() {
                return None;
            }
            (false, 20)
        }
        6 if p.len() >= 40 && p[6] == TCP => {
            if usize::from(u16::from_be_bytes([p[4], p[5]])) + 40 != p.len() {
                return None;
            }
            (true, 40)
        }
        _ => return None,
    };
    let tcp = usize::from(*p.get(ip + 12)? >> 4) * 4;
    if tcp < 20 || p.len() <= ip + tcp {
        return None;
    }
    let flags = p[ip + 13];
    if flags & (TCP_FIN | TCP_SYN | TCP_RST | TCP_URG | TCP_ECE | TCP_CWR) != 0
        || flags & TCP_ACK == 0
    {
        return None;
    }
    Some(DataSegment {
        v6,
        ip,
        tcp,
        payload: p.len() - ip - tcp,
        seq: u32::from_be_bytes(p[ip + 4..ip + 8].try_into().ok()?),
        psh: flags & TCP_PSH != 0,
    })
}

/// The segment being built.
#[derive(Debug)]
struct Open {
    /// Where its virtio-net header starts in [`Coalescer::out`].
    start: usize,
    first: DataSegment,
    joined: usize,
    next_seq: u32,
    /// A short or PSH packet ends a segment.
    closed: bool,
}

/// Joins decrypted packets of one TCP flow that follow one another into
/// one segment for the kernel; the rest pass as they are. Each entry of
/// [`Coalescer::writes`] is one TUN write, virtio-net header included.
#[derive(Debug, Default)]
pub struct Coalescer {
    out: Packets,
    open: Option<Open>,
    joined: usize,
}

impl Coalescer {
    /// Takes one packet, in arrival order.
    pub fn push(&mut self, packet: &[u8]) {
        let Some(seg) = data_segment(packet) else {
            self.close();
            self.push_plain(packet);
            return;
        };
        if self.join(packet, &seg) {
            return;
        }
        self.close();
        let start = self.out.bytes.len();
        self.out.bytes.extend_from_slice(&[0; VNET_HDR_LEN]);
        self.out.bytes.extend_from_slice(packet);
        self.open = Some(Open {
            start,
            first: seg,
            joined: 1,
            next_seq: seg.seq.wrapping_add(seg.payload as u32),
            closed: seg.psh,
        });
    }

    /// Ends the segment being built; call before reading [`Self::writes`].
    pub fn finish(&mut self) {
        self.close();
    }

    /// The TUN writes, in order.
    pub fn writes(&self) -> impl Iterator<Item = &[u8]> {
        self.out.iter()
    }

    /// How many of [`Self::writes`] join more than one packet.
    pub fn joined(&self) -> usize {
        self.joined
    }

    pub fn clear(&mut self) {
        self.out.clear();
        self.open = None;
        self.joined = 0;
    }

    fn push_plain(&mut self, packet: &[u8]) {
        let start = self.out.bytes.len();
        self.out.bytes.extend_from_slice(&[0; VNET_HDR_LEN]);
        self.out.bytes.extend_from_slice(packet);
        self.out.ranges.push(start..self.out.bytes.len());
    }

    /// Appends `packet`'s payload to the open segment if it continues it:
    /// same addresses, ports, header sizes, TCP options, ACK and window;
    /// the next sequence number; no larger than the first packet.
    fn join(&mut self, p: &[u8], seg: &DataSegment) -> bool {
        let Some(open) = &mut self.open else {
            return false;
        };
        let first = &self.out.bytes[open.start + VNET_HDR_LEN..];
        let f = open.first;
        let size = first.len();
        if open.closed
            || open.joined >= MAX_JOINED
            || seg.v6 != f.v6
            || seg.tcp != f.tcp
            || seg.seq != open.next_seq
            || seg.payload > f.payload
            || size + seg.payload > MAX_SEGMENT
        {
            return false;
        }
        let same_ip = if f.v6 {
            // Traffic class, flow label, next header, hop limit, addresses.
            first[..4] == p[..4] && first[6..40] == p[6..40]
        } else {
            // TOS; DF; TTL, protocol; addresses.
            first[1] == p[1]
                && first[6] & 0x40 == p[6] & 0x40
                && first[8..10] == p[8..10]
                && first[12..20] == p[12..20]
        };
        let t = f.ip;
        // Ports; then ACK number, header size, flags but PSH, window; then
        // the options.
        let same_tcp = first[t..t + 4] == p[t..t + 4]
            && first[t + 8..t + 13] == p[t + 8..t + 13]
            && first[t + 13] & !TCP_PSH == p[t + 13] & !TCP_PSH
            && first[t + 14..t + 16] == p[t + 14..t + 16]
            && first[t + 20..t + f.tcp] == p[t + 20..t + seg.tcp];
        if !same_ip || !same_tcp {
            return false;
        }
        self.out.bytes.extend_from_slice(&p[t + seg.tcp..]);
        open.joined += 1;
        open.next_seq = seg.seq.wrapping_add(seg.payload as u32);
        if seg.psh {
            self.out.bytes[open.start + VNET_HDR_LEN + t + 13] |= TCP_PSH;
        }
        open.closed = seg.psh || seg.payload < f.payload;
        true
    }

    /// Finishes the open segment: one packet stays as it came; joined
    /// ones get their lengths, an IPv4 header checksum, and a TCP checksum
    /// for the kernel to complete (or to trust: the peer's WireGuard
    /// session authenticated every byte).
    fn close(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        let f = open.first;
        let end = self.out.bytes.len();
        if open.joined > 1 {
            self.joined += 1;
            let (hdr, seg) = self.out.bytes[open.start..].split_at_mut(VNET_HDR_LEN);
            let total = seg.len();
            if f.v6 {
                put_u16(seg, 4, (total - 40) as u16);
            } else {
                put_u16(seg, 2, total as u16);
                ipv4_header_checksum(seg);
            }
            let pseudo = fold(pseudo_header_sum(seg, f.v6, total - f.ip));
            put_u16(seg, f.ip + TCP_CSUM_OFFSET, pseudo);
            VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: if f.v6 { GSO_TCPV6 } else { GSO_TCPV4 },
                hdr_len: (f.ip + f.tcp) as u16,
                gso_size: f.payload as u16,
                csum_start: f.ip as u16,
                csum_offset: TCP_CSUM_OFFSET as u16,
            }
            .write(hdr);
        }
        self.out.ranges.push(open.start..end);
    }
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Adds `data` to a one's-complement sum (RFC 1071), 32 bits at a time
/// into 64: the same sum as 16-bit words once folded.
pub(crate) fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    acc + u64::from(u32::from_be_bytes(tail))
}

pub(crate) fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The TCP pseudo-header of `packet` for `len` bytes of TCP.
fn pseudo_header_sum(packet: &[u8], v6: bool, len: usize) -> u64 {
    let addresses = if v6 { &packet[8..40] } else { &packet[12..20] };
    sum(addresses, u64::from(TCP) + len as u64)
}

fn ipv4_header_checksum(packet: &mut [u8]) {
    let len = usize::from(packet[0] & 0x0f) * 4;
    put_u16(packet, 10, 0);
    let c = !fold(sum(&packet[..len], 0));
    put_u16(packet, 10, c);
}

fn tcp_checksum(packet: &mut [u8], tcp: usize, v6: bool) {
    put_u16(packet, tcp + TCP_CSUM_OFFSET, 0);
    let len = packet.len() - tcp;
    let c = !fold(sum(&packet[tcp..], pseudo_header_sum(packet, v6, len)));
    put_u16(packet, tcp + TCP_CSUM_OFFSET, c);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP/IPv4 packet (timestamps option, 12 bytes) with a valid
    /// checksum.
    fn tcp4(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 20 + 32];
        p[0] = 0x45;
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = TCP;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let t = 20;
        p[t..t + 2].copy_from_slice(&40000u16.to_be_bytes());
        p[t + 2..t + 4].copy_from_slice(&5201u16.to_be_bytes());
        p[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
        p[t + 8..t + 12].copy_from_slice(&7u32.to_be_bytes());
        p[t + 12] = 8 << 4;
        p[t + 13] = flags;
        p[t + 14..t + 16].copy_from_slice(&512u16.to_be_bytes());
        p[t + 20..t + 32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 3]);
        p.extend_from_slice(payload);
        let len = p.len() as u16;
        put_u16(&mut p, 2, len);
        ipv4_header_checksum(&mut p);
        tcp_checksum(&mut p, 20, false);
        p
    }

    fn tcp6(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 40 + 20];
        p[0] = 0x60;
        p[6] = TCP;
        p[7] = 64;
        p[8..24].copy_from_slice(&"fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        p[24..40].copy_from_slice(&"fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
        let t = 40;
        p[t..t + 2].copy_from_slice(&40000u16.to_be_bytes());
        p[t + 2..t + 4].copy_from_slice(&5201u16.to_be_bytes());
        p[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
        p[t + 12] = 5 << 4;
        p[t + 13] = flags;
        p.extend_from_slice(payload);
        let len = (p.len() - 40) as u16;
        put_u16(&mut p, 4, len);
        tcp_checksum(&mut p, 40, true);
        p
    }

    /// What a receiver checks: the IPv4 header and TCP checksums add up.
    fn checksums_hold(p: &[u8]) -> bool {
        let v6 = p[0] >> 4 == 6;
        let ip = if v6 { 40 } else { usize::from(p[0] & 0x0f) * 4 };
        let ip_ok = v6 || fold(sum(&p[..ip], 0)) == 0xffff;
        let tcp_ok = fold(sum(&p[ip..], pseudo_header_sum(p, v6, p.len() - ip))) == 0xffff;
        ip_ok && tcp_ok
    }

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + 3) as u8).collect()
    }

    /// What the kernel hands over: one segment, checksum left partial.
    fn gso(mut packet: Vec<u8>, v6: bool, mss: u16) -> (VnetHdr, Vec<u8>) {
        let ip = if v6 { 40 } else { 20 };
        let tcp = usize::from(packet[ip + 12] >> 4) * 4;
        let seed = fold(pseudo_header_sum(&packet, v6, packet.len() - ip));
        put_u16(&mut packet, ip + TCP_CSUM_OFFSET, seed);
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if v6 { GSO_TCPV6 } else { GSO_TCPV4 },
            hdr_len: (ip + tcp) as u16,
            gso_size: mss,
            csum_start: ip as u16,
            csum_offset: 16,
        };
        (hdr, packet)
    }

    #[test]
    fn a_segment_is_cut_into_packets_a_receiver_accepts() {
        let data = payload(10_000);
        let (hdr, mut packet) = gso(tcp4(1000, TCP_ACK | TCP_PSH, &data), false, 1368);
        let mut out = Packets::default();
        split(hdr, &mut packet, &mut out).unwrap();
        assert_eq!(out.len(), 8, "10000 bytes in 1368-byte packets");
        let mut joined = Vec::new();
        for (i, p) in out.iter().enumerate() {
            assert!(checksums_hold(p), "packet {i}");
            assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len());
            let seq = u32::from_be_bytes(p[24..28].try_into().unwrap());
            assert_eq!(seq, 1000 + (i * 1368) as u32);
            assert_eq!(
                u16::from_be_bytes([p[4], p[5]]),
                i as u16,
                "IP ids count up"
            );
            let psh = p[33] & TCP_PSH != 0;
            assert_eq!(psh, i == 7, "PSH only on the last");
            assert!(p.len() <= 20 + 32 + 1368);
            joined.extend_from_slice(&p[52..]);
        }
        assert_eq!(joined, data);
    }

    #[test]
    fn ipv6_segments_are_cut_too() {
        let data = payload(3000);
        let (hdr, mut packet) = gso(tcp6(u32::MAX - 10, TCP_ACK, &data), true, 1400);
        let mut out = Packets::default();
        split(hdr, &mut packet, &mut out).unwrap();
        assert_eq!(out.len(), 3);
        for p in out.iter() {
            assert!(checksums_hold(p));
            assert_eq!(usize::from(u16::from_be_bytes([p[4], p[5]])) + 40, p.len());
        }
        let seq = u32::from_be_bytes(out.get(1)[44..48].try_into().unwrap());
        assert_eq!(
            seq,
            (u32::MAX - 10).wrapping_add(1400),
            "sequence numbers wrap"
        );
    }

    #[test]
    fn a_partial_checksum_is_finished() {
        let (mut hdr, mut packet) = gso(tcp4(5, TCP_ACK, &payload(100)), false, 1368);
        hdr.gso_type = GSO_NONE;
        assert!(!checksums_hold(&packet));
        let mut out = Packets::default();
        split(hdr, &mut packet, &mut out).unwrap();
        assert!(checksums_hold(out.get(0)));
    }

    #[test]
    fn nonsense_from_the_kernel_is_refused_not_cut() {
        let mut out = Packets::default();
        let (mut hdr, mut packet) = gso(tcp4(5, TCP_ACK, &payload(100)), false, 1368);
        hdr.gso_type = 3; // UDP
        assert_eq!(
            split(hdr, &mut packet, &mut out),
            Err(SplitError::GsoType(3))
        );
        hdr.gso_type = GSO_TCPV4;
        hdr.csum_start = 2000;
        assert_eq!(split(hdr, &mut packet, &mut out), Err(SplitError::Headers));
        hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 100,
            csum_offset: 100,
            ..VnetHdr::default()
        };
        assert_eq!(split(hdr, &mut packet, &mut out), Err(SplitError::Offsets));
        assert!(out.is_empty());
    }

    fn coalesce(packets: &[Vec<u8>]) -> Vec<(VnetHdr, Vec<u8>)> {
        let mut c = Coalescer::default();
        for p in packets {
            c.push(p);
        }
        c.finish();
        c.writes()
            .map(|w| (VnetHdr::parse(w).unwrap(), w[VNET_HDR_LEN..].to_vec()))
            .collect()
    }

    #[test]
    fn packets_of_a_flow_are_joined_and_cut_back_the_same() {
        let data = payload(5000);
        let (hdr, mut segment) = gso(tcp4(77, TCP_ACK | TCP_PSH, &data), false, 1368);
        let mut packets = Packets::default();
        split(hdr, &mut segment, &mut packets).unwrap();
        let packets: Vec<Vec<u8>> = packets.iter().map(<[u8]>::to_vec).collect();
        let writes = coalesce(&packets);
        assert_eq!(writes.len(), 1, "one write for the flow");
        let mut c = Coalescer::default();
        packets.iter().for_each(|p| c.push(p));
        c.finish();
        assert_eq!(c.joined(), 1);
        let (hdr, joined) = &writes[0];
        assert_eq!(hdr.gso_type, GSO_TCPV4);
        assert_eq!(hdr.gso_size, 1368);
        assert_eq!(hdr.flags, F_NEEDS_CSUM);
        assert_eq!(&joined[52..], &data[..]);
        assert_eq!(joined[33] & TCP_PSH, TCP_PSH, "the last packet's PSH");
        assert_eq!(fold(sum(&joined[..20], 0)), 0xffff, "IPv4 header checksum");
        // The kernel would cut it into the packets it came from.
        let mut again = Packets::default();
        split(*hdr, &mut joined.clone(), &mut again).unwrap();
        let again: Vec<Vec<u8>> = again.iter().map(<[u8]>::to_vec).collect();
        assert_eq!(again, packets);
    }

    #[test]
    fn ipv6_packets_are_joined() {
        let a = tcp6(1, TCP_ACK, &payload(1000));
        let b = tcp6(1001, TCP_ACK, &payload(1000));
        let writes = coalesce(&[a, b]);
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].0.gso_type, GSO_TCPV6);
        assert_eq!(writes[0].1.len(), 60 + 2000);
    }

    #[test]
    fn what_does_not_continue_the_flow_is_written_as_it_came() {
        let a = tcp4(1, TCP_ACK, &payload(1000));
        let gap = tcp4(5001, TCP_ACK, &payload(1000));
        let mut other_port = tcp4(6001, TCP_ACK, &payload(1000));
        other_port[20] = 1;
        let syn = tcp4(1, TCP_SYN, &[]);
        let bare_ack = tcp4(2, TCP_ACK, &[]);
        let udp = {
            let mut u = tcp4(1, TCP_ACK, &payload(10));
            u[9] = 17;
            u
        };
        let pushed = tcp4(7001, TCP_ACK | TCP_PSH, &payload(1000));
        let after_push = tcp4(8001, TCP_ACK, &payload(1000));
        let input = [a, gap, other_port, syn, bare_ack, udp, pushed, after_push];
        let writes = coalesce(&input);
        assert_eq!(writes.len(), input.len(), "nothing joined");
        for ((hdr, w), p) in writes.iter().zip(&input) {
            assert_eq!(*hdr, VnetHdr::default());
            assert_eq!(w, p);
        }
    }

    #[test]
    fn a_short_packet_ends_the_segment() {
        let a = tcp4(1, TCP_ACK, &payload(1000));
        let b = tcp4(1001, TCP_ACK, &payload(500));
        let c = tcp4(1501, TCP_ACK, &payload(500));
        let writes = coalesce(&[a, b, c]);
        assert_eq!(writes.len(), 2);
        assert_eq!(writes[0].1.len(), 52 + 1500);
        assert_eq!(writes[1].0, VnetHdr::default());
    }

    #[test]
    fn segments_stay_within_64_kib() {
        let packets: Vec<Vec<u8>> = (0..100)
            .map(|i| tcp4(1 + i * 1400, TCP_ACK, &payload(1400)))
            .collect();
        let writes = coalesce(&packets);
        assert!(writes.iter().all(|(_, w)| w.len() <= MAX_SEGMENT));
        let bytes: usize = writes.iter().map(|(_, w)| w.len() - 52).sum();
        assert_eq!(bytes, 100 * 1400);
        assert_eq!(writes.len(), 3, "46 packets fit in one segment");
    }

    #[test]
    fn junk_never_panics() {
        let mut c = Coalescer::default();
        let mut out = Packets::default();
        let base = tcp4(1, TCP_ACK, &payload(40));
        for cut in 0..base.len() {
            c.push(&base[..cut]);
            let mut p = base[..cut].to_vec();
            let hdr = VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: GSO_TCPV4,
                gso_size: 8,
                csum_start: 20,
                csum_offset: 16,
                hdr_len: 52,
            };
            let _ = split(hdr, &mut p, &mut out);
        }
        for byte in 0..=255u8 {
            let mut p = base.clone();
            p[0] = byte;
            p[32] = byte;
            c.push(&p);
        }
        c.finish();
        assert!(c.writes().count() > 0);
    }
}
