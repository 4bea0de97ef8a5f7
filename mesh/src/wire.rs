//! What besides WireGuard travels on the mesh's UDP port: relayed
//! WireGuard datagrams and gossiped discovery records.
//!
//! WireGuard's own messages start with a little-endian type 1–4 followed
//! by three zero bytes; ours start with a kind byte ≥ 0x80 and the tag
//! `SL1`, so the two never collide and one socket (one port through
//! firewalls and NATs) carries everything.
//!
//! ```text
//! to a relay:    | 0x80 'S' 'L' 1 | destination public key (32) | WireGuard datagram |
//! from a relay:  | 0x81 'S' 'L' 1 | origin public key (32)      | WireGuard datagram |
//! gossip:        | 0x82 'S' 'L' 1 | one sealed discovery record                      |
//! ```
//!
//! The relay never sees inside the WireGuard datagram: traffic stays
//! encrypted end to end between the two peers (see docs/mesh.md, Relay).
//! The key in a relayed header is the relay's word, not the origin's; the
//! receiver trusts it only as far as WireGuard then authenticates the
//! inner datagram as coming from that peer.

use thiserror::Error;

const TAG: [u8; 3] = *b"SL\x01";
const HEADER: usize = 4;
const KEY: usize = 32;

const TO_RELAY: u8 = 0x80;
const FROM_RELAY: u8 = 0x81;
const GOSSIP: u8 = 0x82;

/// One datagram received on the mesh port, classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// A WireGuard message, for boringtun to check.
    WireGuard(&'a [u8]),
    /// A peer asks this node to pass `inner` on to `destination`.
    ToRelay {
        destination: [u8; 32],
        inner: &'a [u8],
    },
    /// A relay passes on `inner`, which it says came from `origin`.
    FromRelay { origin: [u8; 32], inner: &'a [u8] },
    /// A sealed discovery record (opened and checked by the caller).
    Gossip(&'a [u8]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WireError {
    #[error("empty datagram")]
    Empty,
    #[error("unknown message kind {0:#04x}")]
    UnknownKind(u8),
    #[error("truncated {0} header")]
    Truncated(&'static str),
    #[error("relayed datagram is not a WireGuard message")]
    NotWireGuard,
}

/// Classifies `datagram`. Cheap: no crypto, no allocation.
pub fn parse(datagram: &[u8]) -> Result<Message<'_>, WireError> {
    let kind = *datagram.first().ok_or(WireError::Empty)?;
    if is_wireguard(datagram) {
        return Ok(Message::WireGuard(datagram));
    }
    if datagram.len() < HEADER || datagram[1..HEADER] != TAG {
        return Err(WireError::UnknownKind(kind));
    }
    let body = &datagram[HEADER..];
    match kind {
        TO_RELAY | FROM_RELAY => {
            let what = if kind == TO_RELAY {
                "to-relay"
            } else {
                "from-relay"
            };
            if body.len() < KEY {
                return Err(WireError::Truncated(what));
            }
            let key: [u8; 32] = body[..KEY].try_into().expect("32 bytes");
            let inner = &body[KEY..];
            // Only WireGuard inside: no relaying of relay or gossip frames.
            if !is_wireguard(inner) {
                return Err(WireError::NotWireGuard);
            }
            Ok(if kind == TO_RELAY {
                Message::ToRelay {
                    destination: key,
                    inner,
                }
            } else {
                Message::FromRelay { origin: key, inner }
            })
        }
        GOSSIP => Ok(Message::Gossip(body)),
        other => Err(WireError::UnknownKind(other)),
    }
}

/// Whether `datagram` has WireGuard's header (type 1–4, three zeros).
fn is_wireguard(datagram: &[u8]) -> bool {
    datagram.len() >= 4 && (1..=4).contains(&datagram[0]) && datagram[1..4] == [0, 0, 0]
}

/// `inner` for `destination`, to send to a relay.
pub fn to_relay(destination: &[u8; 32], inner: &[u8], out: &mut Vec<u8>) {
    frame(TO_RELAY, destination, inner, out)
}

/// `inner` from `origin`, as a relay passes it on.
pub fn from_relay(origin: &[u8; 32], inner: &[u8], out: &mut Vec<u8>) {
    frame(FROM_RELAY, origin, inner, out)
}

/// A sealed record, to gossip.
pub fn gossip(sealed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + sealed.len());
    out.push(GOSSIP);
    out.extend_from_slice(&TAG);
    out.extend_from_slice(sealed);
    out
}

fn frame(kind: u8, key: &[u8; 32], inner: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.push(kind);
    out.extend_from_slice(&TAG);
    out.extend_from_slice(key);
    out.extend_from_slice(inner);
}

#[cfg(test)]
mod tests {
    use super::*;

    const WG_DATA: [u8; 8] = [4, 0, 0, 0, 9, 9, 9, 9];

    #[test]
    fn round_trips() {
        let mut out = Vec::new();
        to_relay(&[7; 32], &WG_DATA, &mut out);
        assert_eq!(
            parse(&out),
            Ok(Message::ToRelay {
                destination: [7; 32],
                inner: &WG_DATA
            })
        );
        from_relay(&[8; 32], &WG_DATA, &mut out);
        assert_eq!(
            parse(&out),
            Ok(Message::FromRelay {
                origin: [8; 32],
                inner: &WG_DATA
            })
        );
        assert_eq!(parse(&gossip(b"sealed")), Ok(Message::Gossip(b"sealed")));
        assert_eq!(parse(&WG_DATA), Ok(Message::WireGuard(&WG_DATA)));
    }

    #[test]
    fn refuses_junk() {
        assert_eq!(parse(&[]), Err(WireError::Empty));
        assert_eq!(parse(&[0x80, b'S']), Err(WireError::UnknownKind(0x80)));
        assert_eq!(
            parse(&[0x80, b'S', b'L', 1, 1]),
            Err(WireError::Truncated("to-relay"))
        );
        assert_eq!(parse(&[5, 0, 0, 0]), Err(WireError::UnknownKind(5)));
        assert_eq!(
            parse(&[0x83, b'S', b'L', 1]),
            Err(WireError::UnknownKind(0x83))
        );
        // A relay frame inside a relay frame.
        let mut inner = Vec::new();
        to_relay(&[1; 32], &WG_DATA, &mut inner);
        let mut outer = Vec::new();
        to_relay(&[2; 32], &inner, &mut outer);
        assert_eq!(parse(&outer), Err(WireError::NotWireGuard));
    }
}
