//! The DHCPv4 client state machine (RFC 2131 §4.4), without I/O: it takes
//! the time, timeouts and received datagrams, and returns [`Action`]s —
//! datagrams to send and leases to apply or remove. The caller owns the
//! socket, the clock and netlink, so every path here runs in unit tests.
//!
//! ```text
//! INIT ─DISCOVER─▶ SELECTING ─OFFER─▶ REQUESTING ─ACK─▶ BOUND
//!   ▲                                   │NAK/timeout      │T1
//!   └───────────────────────────────────┘                 ▼
//!   ▲                 ┌──────────ACK──────────────── RENEWING (unicast)
//!   │ expiry/NAK      ▼                                   │T2
//!   └───────────── BOUND ◀──ACK── REBINDING (broadcast) ◀─┘
//! ```
//!
//! Retransmission (§4.1): the first DISCOVER goes out at once, then after
//! about 1, 2, 4 … 64 s (doubling, capped), each with up to ±1 s of jitter
//! (±half the delay for the first, short ones) so a rack of nodes booting
//! together does not retransmit in lockstep. RFC 2131 starts at 4 s; 1 s
//! makes the first boot on a lossy or slow-to-carrier link quicker, and the
//! cap keeps the traffic bounded. In RENEWING and REBINDING a REQUEST is
//! repeated after half the remaining time to T2 / expiry, at least 60 s.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

use super::lease::{self, Lease};

const FIRST_RETRANSMIT: Duration = Duration::from_secs(1);
const MAX_RETRANSMIT: Duration = Duration::from_secs(64);
const MAX_JITTER: Duration = Duration::from_secs(1);
/// REQUESTs in REQUESTING before starting over with a DISCOVER.
const MAX_REQUESTS: u32 = 4;
/// §4.4.5: never retransmit in RENEWING/REBINDING more often than this.
const MIN_RENEW_INTERVAL: Duration = Duration::from_secs(60);
/// Pause after a NAK before the next DISCOVER, so a confused server cannot
/// make us spin.
const NAK_DELAY: Duration = Duration::from_secs(1);
/// What we can receive (option 57): an Ethernet frame's worth.
const MAX_MESSAGE_SIZE: u16 = 1500;
/// Fixed BOOTP header up to and including the magic cookie.
const HEADER_LEN: usize = 240;
const MAGIC: [u8; 4] = [99, 130, 83, 99];

/// Options we ask for (option 55).
const REQUESTED_OPTIONS: &[OptionCode] = &[
    OptionCode::SubnetMask,
    OptionCode::Router,
    OptionCode::DomainNameServer,
    OptionCode::Hostname,
    OptionCode::DomainName,
    OptionCode::InterfaceMtu,
    OptionCode::AddressLeaseTime,
    OptionCode::Renewal,
    OptionCode::Rebinding,
    OptionCode::ClasslessStaticRoute,
];

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send `bytes` to `to`:67 (255.255.255.255 for broadcast).
    Send {
        kind: MessageType,
        to: Ipv4Addr,
        bytes: Vec<u8>,
    },
    /// Apply `new`; `old` is the lease it replaces (a renewal when the
    /// address is the same).
    Configure { old: Option<Lease>, new: Lease },
    /// Remove everything `lease` added.
    Deconfigure(Lease),
}

/// Where the client is, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Init,
    Selecting,
    Requesting,
    Bound,
    Renewing,
    Rebinding,
}

#[derive(Debug)]
enum State {
    /// Waiting until `deadline` to send the first DISCOVER.
    Init,
    Selecting {
        attempt: u32,
    },
    Requesting {
        attempt: u32,
        address: Ipv4Addr,
        server: Ipv4Addr,
        sent_at: Instant,
    },
    Bound {
        lease: Lease,
    },
    Renewing {
        lease: Lease,
        sent_at: Instant,
    },
    Rebinding {
        lease: Lease,
        sent_at: Instant,
    },
}

/// Why a datagram was ignored (logged at debug by the caller).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    #[error("{0} bytes, shorter than a DHCP header")]
    Short(usize),
    #[error("not a BOOTREPLY")]
    NotReply,
    #[error("bad magic cookie")]
    BadMagic,
    #[error("foreign transaction id {0:#010x}")]
    ForeignXid(u32),
    #[error("foreign hardware address")]
    ForeignChaddr,
    #[error("undecodable: {0}")]
    Decode(String),
    #[error("no message type")]
    NoType,
    #[error("unexpected {kind:?} in {phase:?}")]
    Unexpected { kind: MessageType, phase: Phase },
    #[error("OFFER of unusable address {0}")]
    BadOffer(Ipv4Addr),
    #[error("OFFER without server identifier")]
    NoServerId,
    #[error("from server {got}, not the selected {want}")]
    OtherServer { got: Ipv4Addr, want: Ipv4Addr },
    #[error("bad ACK: {0}")]
    BadAck(lease::LeaseError),
}

/// The client for one link.
pub struct Client {
    mac: Vec<u8>,
    hostname: Option<String>,
    rng: fastrand::Rng,
    xid: u32,
    /// When this exchange began, for the `secs` field.
    started: Instant,
    state: State,
    deadline: Option<Instant>,
}

impl Client {
    /// A client for the link with hardware address `mac` (≤ 16 bytes),
    /// in INIT with its first DISCOVER due at `now`. `hostname` is sent as
    /// option 12 so the server can register it (the `ip=` hostname).
    pub fn new(mac: &[u8], hostname: Option<String>, rng: fastrand::Rng, now: Instant) -> Client {
        let mut client = Client {
            mac: mac[..mac.len().min(16)].to_vec(),
            hostname,
            rng,
            xid: 0,
            started: now,
            state: State::Init,
            deadline: Some(now),
        };
        client.xid = client.rng.u32(..);
        client
    }

    pub fn phase(&self) -> Phase {
        match self.state {
            State::Init => Phase::Init,
            State::Selecting { .. } => Phase::Selecting,
            State::Requesting { .. } => Phase::Requesting,
            State::Bound { .. } => Phase::Bound,
            State::Renewing { .. } => Phase::Renewing,
            State::Rebinding { .. } => Phase::Rebinding,
        }
    }

    /// When [`Client::on_timeout`] is next due; `None` with an infinite lease.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The deadline passed.
    pub fn on_timeout(&mut self, now: Instant) -> Vec<Action> {
        match self.deadline {
            Some(d) if d <= now => {}
            _ => return Vec::new(),
        }
        match std::mem::replace(&mut self.state, State::Init) {
            State::Init => self.discover(now, 0),
            State::Selecting { attempt } => self.discover(now, attempt + 1),
            State::Requesting {
                attempt,
                address,
                server,
                ..
            } => {
                if attempt + 1 >= MAX_REQUESTS {
                    self.restart(now, Duration::ZERO)
                } else {
                    self.request(now, attempt + 1, address, server)
                }
            }
            State::Bound { lease } => {
                self.new_exchange(now);
                self.renew(now, lease)
            }
            State::Renewing { lease, .. } => {
                if lease.t2_at().is_some_and(|t2| now >= t2) {
                    self.new_exchange(now);
                    self.rebind(now, lease)
                } else {
                    self.renew(now, lease)
                }
            }
            State::Rebinding { lease, .. } => {
                if lease.expiry().is_some_and(|e| now >= e) {
                    let mut actions = vec![Action::Deconfigure(lease)];
                    actions.extend(self.restart(now, Duration::ZERO));
                    actions
                } else {
                    self.rebind(now, lease)
                }
            }
        }
    }

    /// A datagram arrived on port 68. Replies that are not for us, or that
    /// do not parse, come back as `Err` and leave the state untouched.
    pub fn on_packet(&mut self, now: Instant, bytes: &[u8]) -> Result<Vec<Action>, Ignored> {
        let msg = self.parse(bytes)?;
        let kind = msg.opts().msg_type().ok_or(Ignored::NoType)?;
        let phase = self.phase();
        let unexpected = Err(Ignored::Unexpected { kind, phase });
        match (&self.state, kind) {
            (State::Selecting { .. }, MessageType::Offer) => {
                let address = msg.yiaddr();
                if !lease::usable_address(address) {
                    return Err(Ignored::BadOffer(address));
                }
                let server = lease::server_id(&msg).ok_or(Ignored::NoServerId)?;
                // The first valid OFFER wins: waiting for more only delays
                // boot, and any server on the segment is authoritative.
                Ok(self.request(now, 0, address, server))
            }
            (
                State::Requesting {
                    server, sent_at, ..
                },
                MessageType::Ack,
            ) => {
                check_server(&msg, *server)?;
                let lease = Lease::from_ack(&msg, *sent_at).map_err(Ignored::BadAck)?;
                Ok(self.bind(None, lease))
            }
            (State::Requesting { server, .. }, MessageType::Nak) => {
                check_server(&msg, *server)?;
                Ok(self.restart(now, NAK_DELAY))
            }
            (
                State::Renewing { lease, sent_at } | State::Rebinding { lease, sent_at },
                MessageType::Ack,
            ) => {
                let new = Lease::from_ack(&msg, *sent_at).map_err(Ignored::BadAck)?;
                let old = lease.clone();
                Ok(self.bind(Some(old), new))
            }
            (State::Renewing { lease, .. } | State::Rebinding { lease, .. }, MessageType::Nak) => {
                let old = lease.clone();
                let mut actions = vec![Action::Deconfigure(old)];
                actions.extend(self.restart(now, NAK_DELAY));
                Ok(actions)
            }
            _ => unexpected,
        }
    }

    /// The client stops (networkd shuts down): a lease held is given back
    /// with a RELEASE to its server (§4.4.6) and removed; no timer is left.
    pub fn release(&mut self, now: Instant) -> Vec<Action> {
        let lease = match std::mem::replace(&mut self.state, State::Init) {
            State::Bound { lease }
            | State::Renewing { lease, .. }
            | State::Rebinding { lease, .. } => lease,
            other => {
                self.state = other;
                self.deadline = None;
                return Vec::new();
            }
        };
        self.deadline = None;
        self.new_exchange(now);
        let mut msg = self.message(now, MessageType::Release, false, lease.address);
        // RELEASE carries no parameter list and no size: only who we are
        // and which server's lease this was.
        msg.opts_mut().remove(OptionCode::ParameterRequestList);
        msg.opts_mut().remove(OptionCode::MaxMessageSize);
        msg.opts_mut()
            .insert(DhcpOption::ServerIdentifier(lease.server));
        let mut actions = self.send(msg, lease.server);
        actions.push(Action::Deconfigure(lease));
        actions
    }

    /// Checks the fixed header before decoding: dhcproto trusts `hlen` and
    /// would index past `chaddr` with a hostile one, and it does not check
    /// the magic cookie.
    fn parse(&self, bytes: &[u8]) -> Result<Message, Ignored> {
        if bytes.len() < HEADER_LEN {
            return Err(Ignored::Short(bytes.len()));
        }
        if bytes[0] != 2 {
            return Err(Ignored::NotReply);
        }
        if bytes[236..240] != MAGIC {
            return Err(Ignored::BadMagic);
        }
        let xid = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if xid != self.xid {
            return Err(Ignored::ForeignXid(xid));
        }
        let hlen = usize::from(bytes[2]);
        if hlen != self.mac.len() || bytes[28..28 + hlen] != self.mac[..] {
            return Err(Ignored::ForeignChaddr);
        }
        // Defence in depth: a decoder bug must cost one datagram, never
        // the daemon.
        let decoded = std::panic::catch_unwind(|| Message::decode(&mut Decoder::new(bytes)))
            .map_err(|_| Ignored::Decode("decoder panicked".into()))?;
        let msg = decoded.map_err(|e| Ignored::Decode(e.to_string()))?;
        if msg.opcode() != Opcode::BootReply {
            return Err(Ignored::NotReply);
        }
        Ok(msg)
    }

    /// New transaction: fresh xid and `secs` clock.
    fn new_exchange(&mut self, now: Instant) {
        self.xid = self.rng.u32(..);
        self.started = now;
    }

    /// Back to INIT, first DISCOVER after `delay`.
    fn restart(&mut self, now: Instant, delay: Duration) -> Vec<Action> {
        self.new_exchange(now + delay);
        self.state = State::Init;
        self.deadline = Some(now + delay);
        if delay.is_zero() {
            self.on_timeout(now)
        } else {
            Vec::new()
        }
    }

    fn discover(&mut self, now: Instant, attempt: u32) -> Vec<Action> {
        let msg = self.message(now, MessageType::Discover, true, Ipv4Addr::UNSPECIFIED);
        self.state = State::Selecting { attempt };
        self.deadline = Some(now + self.backoff(attempt));
        self.send(msg, Ipv4Addr::BROADCAST)
    }

    fn request(
        &mut self,
        now: Instant,
        attempt: u32,
        address: Ipv4Addr,
        server: Ipv4Addr,
    ) -> Vec<Action> {
        let mut msg = self.message(now, MessageType::Request, true, Ipv4Addr::UNSPECIFIED);
        msg.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(address));
        msg.opts_mut().insert(DhcpOption::ServerIdentifier(server));
        self.state = State::Requesting {
            attempt,
            address,
            server,
            sent_at: now,
        };
        self.deadline = Some(now + self.backoff(attempt));
        self.send(msg, Ipv4Addr::BROADCAST)
    }

    /// RENEWING: unicast to the server that granted the lease, with our
    /// address in `ciaddr` and no server id (§4.3.2).
    fn renew(&mut self, now: Instant, lease: Lease) -> Vec<Action> {
        let msg = self.message(now, MessageType::Request, false, lease.address);
        let server = lease.server;
        self.deadline = lease.t2_at().map(|t2| retransmit_before(now, t2));
        self.state = State::Renewing {
            lease,
            sent_at: now,
        };
        self.send(msg, server)
    }

    /// REBINDING: the same REQUEST, broadcast to any server.
    fn rebind(&mut self, now: Instant, lease: Lease) -> Vec<Action> {
        let msg = self.message(now, MessageType::Request, false, lease.address);
        self.deadline = lease.expiry().map(|e| retransmit_before(now, e));
        self.state = State::Rebinding {
            lease,
            sent_at: now,
        };
        self.send(msg, Ipv4Addr::BROADCAST)
    }

    fn bind(&mut self, old: Option<Lease>, new: Lease) -> Vec<Action> {
        self.deadline = new.t1_at();
        self.state = State::Bound { lease: new.clone() };
        vec![Action::Configure { old, new }]
    }

    /// The common part of every message we send.
    fn message(
        &self,
        now: Instant,
        kind: MessageType,
        broadcast: bool,
        ciaddr: Ipv4Addr,
    ) -> Message {
        let mut msg = blank_request(self.xid, &self.mac);
        let secs = now.saturating_duration_since(self.started).as_secs();
        msg.set_opcode(Opcode::BootRequest)
            .set_secs(u16::try_from(secs).unwrap_or(u16::MAX))
            .set_ciaddr(ciaddr);
        if broadcast {
            // We have no address yet: ask the server to broadcast its reply,
            // which a plain UDP socket then receives.
            msg.set_flags(Flags::default().set_broadcast());
        }
        let opts = msg.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        let mut client_id = vec![1u8]; // htype Ethernet, then the MAC (RFC 2132 §9.14)
        client_id.extend_from_slice(&self.mac);
        opts.insert(DhcpOption::ClientIdentifier(client_id));
        opts.insert(DhcpOption::MaxMessageSize(MAX_MESSAGE_SIZE));
        opts.insert(DhcpOption::ParameterRequestList(REQUESTED_OPTIONS.to_vec()));
        if let Some(h) = &self.hostname {
            opts.insert(DhcpOption::Hostname(h.clone()));
        }
        msg
    }

    fn send(&self, msg: Message, to: Ipv4Addr) -> Vec<Action> {
        let kind = msg.opts().msg_type().unwrap_or(MessageType::Request);
        let mut bytes = Vec::with_capacity(300);
        match msg.encode(&mut Encoder::new(&mut bytes)) {
            Ok(()) => vec![Action::Send { kind, to, bytes }],
            Err(e) => {
                // Only our own options go in; this is a bug, not the network.
                tracing::error!("encoding DHCP {kind:?}: {e}");
                Vec::new()
            }
        }
    }

    /// Delay before retransmission number `attempt + 1`.
    fn backoff(&mut self, attempt: u32) -> Duration {
        let base = FIRST_RETRANSMIT
            .saturating_mul(1 << attempt.min(16))
            .min(MAX_RETRANSMIT);
        let jitter = MAX_JITTER.min(base / 2);
        let jitter_ms = u64::try_from(jitter.as_millis()).unwrap_or(0);
        let offset = Duration::from_millis(self.rng.u64(0..=2 * jitter_ms));
        base - jitter + offset
    }
}

/// An empty BOOTREQUEST for `xid` and `mac`.
///
/// Built by decoding a zeroed header because every dhcproto constructor
/// (`Message::default`, `new`, even `new_with_id`) draws an xid from
/// `rand`'s OS generator, which blocks until the kernel's CRNG is seeded:
/// on a VM without an RNG device that held the first DISCOVER back for
/// 11 s of boot. Our xid comes from `fastrand`, which never blocks.
fn blank_request(xid: u32, mac: &[u8]) -> Message {
    // op, htype, hlen, hops, xid, secs, flags, 4 addresses, chaddr[16],
    // sname[64], file[128], magic cookie, END.
    let mut header = [0u8; 241];
    header[0] = 1; // BOOTREQUEST
    header[1] = 1; // Ethernet
    header[4..8].copy_from_slice(&xid.to_be_bytes());
    header[236..240].copy_from_slice(&[99, 130, 83, 99]);
    header[240] = 255;
    let mut msg = Message::decode(&mut Decoder::new(&header))
        .unwrap_or_else(|_| unreachable!("a fixed, valid header"));
    msg.set_chaddr(mac);
    msg
}

/// §4.4.5: half the time left until `limit`, at least 60 s, never past it.
fn retransmit_before(now: Instant, limit: Instant) -> Instant {
    let half = limit.saturating_duration_since(now) / 2;
    (now + half.max(MIN_RENEW_INTERVAL)).min(limit)
}

/// Replies in REQUESTING must come from the server we chose (a NAK or ACK
/// from another server answers someone else's selection).
fn check_server(msg: &Message, want: Ipv4Addr) -> Result<(), Ignored> {
    match lease::server_id(msg) {
        Some(got) if got != want => Err(Ignored::OtherServer { got, want }),
        _ => Ok(()),
    }
}

impl crate::lease_loop::Machine for Client {
    type Action = Action;
    type Ignored = Ignored;
    fn deadline(&self) -> Option<Instant> {
        Client::deadline(self)
    }
    fn on_packet(&mut self, now: Instant, datagram: &[u8]) -> Result<Vec<Action>, Ignored> {
        Client::on_packet(self, now, datagram)
    }
    fn on_timeout(&mut self, now: Instant) -> Vec<Action> {
        Client::on_timeout(self, now)
    }
}
