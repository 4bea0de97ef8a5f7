//! The DHCPv6 client state machine (RFC 8415, stateful addresses with one
//! IA_NA), without I/O: like the DHCPv4 one it takes the time, timeouts and
//! received datagrams and returns [`Action`]s, so every path runs in unit
//! tests.
//!
//! ```text
//! SOLICIT ─ADVERTISE─▶ REQUEST ─REPLY─▶ BOUND ─T1─▶ RENEW ─T2─▶ REBIND
//!    ▲                    │ 10 tries       ▲  ◀─REPLY──┘            │
//!    └────────────────────┘                └───────REPLY────────────┘
//!    ▲ valid lifetime over: the address goes                         │
//!    └────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Every message goes to All_DHCP_Relay_Agents_and_Servers (ff02::1:2);
//! we never ask for unicast. Retransmission (§15): 1 s doubling to 64 s
//! for SOLICIT (RFC: 3600 s; a node at boot wants its address soon), 1 s
//! doubling to 30 s and at most 10 REQUESTs, 10 s doubling to 600 s for
//! RENEW and REBIND, each with ±10 % jitter. The first SOLICIT goes out at
//! once rather than after §18.2.1's random delay of up to 1 s: the boot
//! is the point, and the delay only spreads a rack's first packets.

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use dhcproto::v6::{
    DhcpOption, IAAddr, IANA, Message, MessageType, ORO, OptionCode, Status, StatusCode,
};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

const SOL_TIMEOUT: Duration = Duration::from_secs(1);
const SOL_MAX_RT: Duration = Duration::from_secs(64);
const REQ_TIMEOUT: Duration = Duration::from_secs(1);
const REQ_MAX_RT: Duration = Duration::from_secs(30);
const REQ_MAX_RC: u32 = 10;
const REN_TIMEOUT: Duration = Duration::from_secs(10);
const REN_MAX_RT: Duration = Duration::from_secs(600);
/// A short T1 from a confused server must not make us spin.
const MIN_T1: Duration = Duration::from_secs(10);
/// `ElapsedTime` counts hundredths of a second and saturates here.
const MAX_ELAPSED: u16 = 0xffff;

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send `bytes` to ff02::1:2 port 547.
    Send { kind: MessageType, bytes: Vec<u8> },
    /// Apply the lease (new, or renewed with new lifetimes).
    Configure(Lease),
    /// Remove what the lease added.
    Deconfigure(Lease),
}

/// One address from an IA_NA, with what came along.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv6Addr,
    pub preferred: Duration,
    pub valid: Duration,
    pub dns: Vec<Ipv6Addr>,
    pub search: Vec<String>,
    server_id: Vec<u8>,
    t1: Duration,
    t2: Duration,
    /// When the REQUEST/RENEW/REBIND that got it was sent (§18.2.10.1:
    /// lifetimes count from then).
    acquired: Instant,
}

impl Lease {
    fn t1_at(&self) -> Instant {
        self.acquired + self.t1
    }
    fn t2_at(&self) -> Instant {
        self.acquired + self.t2
    }
    fn expiry(&self) -> Instant {
        self.acquired + self.valid
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Soliciting,
    Requesting,
    Bound,
    Renewing,
    Rebinding,
}

#[derive(Debug)]
enum State {
    Soliciting,
    Requesting { server_id: Vec<u8>, attempt: u32 },
    Bound { lease: Lease },
    Renewing { lease: Lease },
    Rebinding { lease: Lease },
}

/// Why a datagram was ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    #[error("undecodable: {0}")]
    Decode(String),
    #[error("foreign transaction id")]
    ForeignXid,
    #[error("not for our DUID")]
    ForeignClient,
    #[error("no server identifier")]
    NoServerId,
    #[error("unexpected {kind:?} in {phase:?}")]
    Unexpected { kind: MessageType, phase: Phase },
    #[error("server status {0:?}: {1}")]
    Status(Status, String),
    #[error("no usable address in the reply")]
    NoAddress,
    #[error("from another server than the one asked")]
    OtherServer,
}

pub struct Client {
    duid: Vec<u8>,
    iaid: u32,
    rng: fastrand::Rng,
    xid: u32,
    /// When this exchange began, for `ElapsedTime`.
    started: Instant,
    /// The current retransmission timeout (RT of §15).
    rt: Duration,
    state: State,
    deadline: Option<Instant>,
}

impl Client {
    /// A client for the link with hardware address `mac`; DUID-LL from it
    /// (stable across reboots without storage), IAID from its last four
    /// bytes. The first SOLICIT is due at `now`.
    pub fn new(mac: &[u8], rng: fastrand::Rng, now: Instant) -> Client {
        let mut duid = vec![0, 3, 0, 1]; // DUID-LL, hardware type Ethernet
        duid.extend_from_slice(&mac[..mac.len().min(16)]);
        let mut tail = [0u8; 4];
        let n = mac.len().min(4);
        tail[4 - n..].copy_from_slice(&mac[mac.len() - n..]);
        let mut client = Client {
            duid,
            iaid: u32::from_be_bytes(tail),
            rng,
            xid: 0,
            started: now,
            rt: Duration::ZERO,
            state: State::Soliciting,
            deadline: Some(now),
        };
        client.new_exchange(now);
        client
    }

    pub fn phase(&self) -> Phase {
        match self.state {
            State::Soliciting => Phase::Soliciting,
            State::Requesting { .. } => Phase::Requesting,
            State::Bound { .. } => Phase::Bound,
            State::Renewing { .. } => Phase::Renewing,
            State::Rebinding { .. } => Phase::Rebinding,
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    pub fn on_timeout(&mut self, now: Instant) -> Vec<Action> {
        match self.deadline {
            Some(d) if d <= now => {}
            _ => return Vec::new(),
        }
        match std::mem::replace(&mut self.state, State::Soliciting) {
            State::Soliciting => self.solicit(now),
            State::Requesting { server_id, attempt } => {
                if attempt + 1 >= REQ_MAX_RC {
                    self.new_exchange(now);
                    self.solicit(now)
                } else {
                    self.request(now, server_id, attempt + 1)
                }
            }
            State::Bound { lease } => {
                self.new_exchange(now);
                self.rt = Duration::ZERO;
                self.renew(now, lease)
            }
            State::Renewing { lease } | State::Rebinding { lease } if now >= lease.expiry() => {
                self.new_exchange(now);
                let mut actions = vec![Action::Deconfigure(lease)];
                actions.extend(self.solicit(now));
                actions
            }
            State::Renewing { lease } if now >= lease.t2_at() => {
                self.new_exchange(now);
                self.rt = Duration::ZERO;
                self.rebind(now, lease)
            }
            State::Renewing { lease } => self.renew(now, lease),
            State::Rebinding { lease } => self.rebind(now, lease),
        }
    }

    pub fn on_packet(&mut self, now: Instant, bytes: &[u8]) -> Result<Vec<Action>, Ignored> {
        let msg = self.parse(bytes)?;
        let kind = msg.msg_type();
        let server_id = match msg.opts().get(OptionCode::ServerId) {
            Some(DhcpOption::ServerId(id)) => id.clone(),
            _ => return Err(Ignored::NoServerId),
        };
        if let Some(DhcpOption::StatusCode(StatusCode { status, msg: text })) =
            msg.opts().get(OptionCode::StatusCode)
            && *status != Status::Success
        {
            return Err(Ignored::Status(*status, text.clone()));
        }
        match (&self.state, kind) {
            (State::Soliciting, MessageType::Advertise) => {
                // The first ADVERTISE with an address wins (like OFFER).
                self.lease_from(&msg, server_id.clone(), now)?;
                self.new_exchange(now);
                Ok(self.request(now, server_id, 0))
            }
            (
                State::Requesting {
                    server_id: asked, ..
                },
                MessageType::Reply,
            ) => {
                if *asked != server_id {
                    return Err(Ignored::OtherServer);
                }
                let lease = self.lease_from(&msg, server_id, self.started)?;
                Ok(self.bind(lease))
            }
            (State::Renewing { .. } | State::Rebinding { .. }, MessageType::Reply) => {
                match self.lease_from(&msg, server_id.clone(), self.started) {
                    Ok(lease) => Ok(self.bind(lease)),
                    // §18.2.10.1: the server lost our binding (a restart);
                    // ask it for one with a REQUEST rather than keep using
                    // an address it may hand to someone else.
                    Err(Ignored::Status(Status::NoBinding, _)) => {
                        self.new_exchange(now);
                        Ok(self.request(now, server_id, 0))
                    }
                    Err(e) => Err(e),
                }
            }
            _ => Err(Ignored::Unexpected {
                kind,
                phase: self.phase(),
            }),
        }
    }

    fn parse(&self, bytes: &[u8]) -> Result<Message, Ignored> {
        // A decoder bug must cost one datagram, never the daemon.
        let decoded = std::panic::catch_unwind(|| Message::decode(&mut Decoder::new(bytes)))
            .map_err(|_| Ignored::Decode("decoder panicked".into()))?;
        let msg = decoded.map_err(|e| Ignored::Decode(e.to_string()))?;
        if msg.xid_num() != self.xid & 0x00ff_ffff {
            return Err(Ignored::ForeignXid);
        }
        match msg.opts().get(OptionCode::ClientId) {
            Some(DhcpOption::ClientId(id)) if *id == self.duid => Ok(msg),
            _ => Err(Ignored::ForeignClient),
        }
    }

    /// The lease in `msg`'s IA_NA for our IAID, lifetimes from `acquired`.
    fn lease_from(
        &self,
        msg: &Message,
        server_id: Vec<u8>,
        acquired: Instant,
    ) -> Result<Lease, Ignored> {
        let ia = msg
            .opts()
            .iter()
            .find_map(|o| match o {
                DhcpOption::IANA(ia) if ia.id == self.iaid => Some(ia),
                _ => None,
            })
            .ok_or(Ignored::NoAddress)?;
        if let Some(DhcpOption::StatusCode(StatusCode { status, msg: text })) =
            ia.opts.get(OptionCode::StatusCode)
            && *status != Status::Success
        {
            return Err(Ignored::Status(*status, text.clone()));
        }
        let addr = ia
            .opts
            .iter()
            .find_map(|o| match o {
                DhcpOption::IAAddr(a)
                    if a.valid_life > 0 && a.preferred_life <= a.valid_life && usable(a.addr) =>
                {
                    Some(a)
                }
                _ => None,
            })
            .ok_or(Ignored::NoAddress)?;
        let secs = |s: u32| Duration::from_secs(u64::from(s));
        let preferred = secs(addr.preferred_life);
        let valid = secs(addr.valid_life);
        // §21.4: T1/T2 of 0 leave the timing to us; 0.5 and 0.8 of the
        // preferred lifetime are the recommended values.
        let (mut t1, mut t2) = (secs(ia.t1), secs(ia.t2));
        if ia.t1 == 0 || ia.t2 == 0 || t1 > t2 {
            t1 = preferred / 2;
            t2 = preferred * 4 / 5;
        }
        // Renew before the address runs out, whatever the server said
        // (T1/T2 may exceed the valid lifetime, or be "infinite").
        let t1 = t1.max(MIN_T1.min(valid / 2)).min(valid / 2);
        let t2 = t2.max(t1).min(valid * 4 / 5).max(t1);
        let dns = match msg.opts().get(OptionCode::DomainNameServers) {
            Some(DhcpOption::DomainNameServers(d)) => {
                d.iter().copied().filter(|a| usable(*a)).collect()
            }
            _ => Vec::new(),
        };
        let search = match msg.opts().get(OptionCode::DomainSearchList) {
            Some(DhcpOption::DomainSearchList(names)) => names
                .iter()
                .map(|n| n.to_utf8().trim_end_matches('.').to_owned())
                .filter(|n| crate::hostname::is_valid(n))
                .collect(),
            _ => Vec::new(),
        };
        Ok(Lease {
            address: addr.addr,
            preferred,
            valid,
            dns,
            search,
            server_id,
            t1,
            t2,
            acquired,
        })
    }

    fn new_exchange(&mut self, now: Instant) {
        self.xid = self.rng.u32(..) & 0x00ff_ffff;
        self.started = now;
        self.rt = Duration::ZERO;
    }

    /// §15: RT = 2·RT (first: IRT), capped at MRT, ±10 % jitter.
    fn next_rt(&mut self, initial: Duration, max: Duration) -> Duration {
        let base = if self.rt.is_zero() {
            initial
        } else {
            (self.rt * 2).min(max)
        };
        let tenth = u64::try_from(base.as_millis() / 10).unwrap_or(0);
        let jittered = base - Duration::from_millis(tenth)
            + Duration::from_millis(self.rng.u64(0..=2 * tenth));
        self.rt = jittered;
        jittered
    }

    fn solicit(&mut self, now: Instant) -> Vec<Action> {
        let msg = self.message(now, MessageType::Solicit, None, None);
        let rt = self.next_rt(SOL_TIMEOUT, SOL_MAX_RT);
        self.state = State::Soliciting;
        self.deadline = Some(now + rt);
        self.send(msg)
    }

    fn request(&mut self, now: Instant, server_id: Vec<u8>, attempt: u32) -> Vec<Action> {
        let msg = self.message(now, MessageType::Request, Some(&server_id), None);
        let rt = self.next_rt(REQ_TIMEOUT, REQ_MAX_RT);
        self.state = State::Requesting { server_id, attempt };
        self.deadline = Some(now + rt);
        self.send(msg)
    }

    fn renew(&mut self, now: Instant, lease: Lease) -> Vec<Action> {
        let msg = self.message(
            now,
            MessageType::Renew,
            Some(&lease.server_id),
            Some(&lease),
        );
        let rt = self.next_rt(REN_TIMEOUT, REN_MAX_RT);
        self.deadline = Some((now + rt).min(lease.t2_at()));
        self.state = State::Renewing { lease };
        self.send(msg)
    }

    fn rebind(&mut self, now: Instant, lease: Lease) -> Vec<Action> {
        let msg = self.message(now, MessageType::Rebind, None, Some(&lease));
        let rt = self.next_rt(REN_TIMEOUT, REN_MAX_RT);
        self.deadline = Some((now + rt).min(lease.expiry()));
        self.state = State::Rebinding { lease };
        self.send(msg)
    }

    fn bind(&mut self, lease: Lease) -> Vec<Action> {
        self.deadline = Some(lease.t1_at().min(lease.expiry()));
        self.state = State::Bound {
            lease: lease.clone(),
        };
        vec![Action::Configure(lease)]
    }

    fn message(
        &self,
        now: Instant,
        kind: MessageType,
        server_id: Option<&[u8]>,
        lease: Option<&Lease>,
    ) -> Message {
        let mut msg = blank(kind, self.xid);
        let opts = msg.opts_mut();
        opts.insert(DhcpOption::ClientId(self.duid.clone()));
        if let Some(id) = server_id {
            opts.insert(DhcpOption::ServerId(id.to_vec()));
        }
        let centis = now.saturating_duration_since(self.started).as_millis() / 10;
        opts.insert(DhcpOption::ElapsedTime(
            u16::try_from(centis).unwrap_or(MAX_ELAPSED),
        ));
        opts.insert(DhcpOption::ORO(ORO {
            opts: vec![OptionCode::DomainNameServers, OptionCode::DomainSearchList],
        }));
        let mut ia_opts = dhcproto::v6::DhcpOptions::new();
        if let Some(l) = lease {
            ia_opts.insert(DhcpOption::IAAddr(IAAddr {
                addr: l.address,
                preferred_life: 0,
                valid_life: 0,
                opts: dhcproto::v6::DhcpOptions::new(),
            }));
        }
        opts.insert(DhcpOption::IANA(IANA {
            id: self.iaid,
            t1: 0,
            t2: 0,
            opts: ia_opts,
        }));
        msg
    }

    fn send(&self, msg: Message) -> Vec<Action> {
        let kind = msg.msg_type();
        let mut bytes = Vec::with_capacity(128);
        match msg.encode(&mut Encoder::new(&mut bytes)) {
            Ok(()) => vec![Action::Send { kind, bytes }],
            Err(e) => {
                tracing::error!("encoding DHCPv6 {kind:?}: {e}");
                Vec::new()
            }
        }
    }
}

/// A global unicast address a server may hand out.
fn usable(a: Ipv6Addr) -> bool {
    !(a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_unicast_link_local())
}

/// An empty message of `kind` with `xid`, decoded from bytes because
/// dhcproto's constructors draw a random xid from the OS generator, which
/// can block early in boot (see the DHCPv4 client's `blank_request`).
fn blank(kind: MessageType, xid: u32) -> Message {
    let x = xid.to_be_bytes();
    let header = [u8::from(kind), x[1], x[2], x[3]];
    Message::decode(&mut Decoder::new(&header))
        .unwrap_or_else(|_| unreachable!("a fixed, valid header"))
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

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    const SERVER: &[u8] = &[0, 3, 0, 1, 2, 2, 2, 2, 2, 2];

    fn sent(actions: &[Action]) -> Message {
        match actions.last() {
            Some(Action::Send { bytes, .. }) => Message::decode(&mut Decoder::new(bytes)).unwrap(),
            other => panic!("expected a send, got {other:?}"),
        }
    }

    /// A server's answer to `to`, with an address of `valid` seconds.
    fn answer(to: &Message, kind: MessageType, valid: u32, t1: u32, t2: u32) -> Vec<u8> {
        let mut m = blank(kind, to.xid_num());
        let client_id = to.opts().get(OptionCode::ClientId).unwrap().clone();
        let iaid = match to.opts().get(OptionCode::IANA) {
            Some(DhcpOption::IANA(ia)) => ia.id,
            _ => panic!("no IA_NA"),
        };
        let mut ia_opts = dhcproto::v6::DhcpOptions::new();
        ia_opts.insert(DhcpOption::IAAddr(IAAddr {
            addr: "fd00:99::50".parse().unwrap(),
            preferred_life: valid,
            valid_life: valid,
            opts: Default::default(),
        }));
        let opts = m.opts_mut();
        opts.insert(client_id);
        opts.insert(DhcpOption::ServerId(SERVER.to_vec()));
        opts.insert(DhcpOption::IANA(IANA {
            id: iaid,
            t1,
            t2,
            opts: ia_opts,
        }));
        opts.insert(DhcpOption::DomainNameServers(vec![
            "fd00:99::1".parse().unwrap(),
        ]));
        let mut b = Vec::new();
        m.encode(&mut Encoder::new(&mut b)).unwrap();
        b
    }

    fn bound(now: Instant) -> (Client, Lease) {
        let mut c = Client::new(&MAC, fastrand::Rng::with_seed(1), now);
        let solicit = sent(&c.on_timeout(now));
        assert_eq!(solicit.msg_type(), MessageType::Solicit);
        let adv = answer(&solicit, MessageType::Advertise, 3600, 0, 0);
        let request = sent(&c.on_packet(now, &adv).unwrap());
        assert_eq!(request.msg_type(), MessageType::Request);
        assert!(matches!(
            request.opts().get(OptionCode::ServerId),
            Some(DhcpOption::ServerId(id)) if id == SERVER
        ));
        let reply = answer(&request, MessageType::Reply, 3600, 1000, 2000);
        let actions = c.on_packet(now, &reply).unwrap();
        let Some(Action::Configure(lease)) = actions.first() else {
            panic!("{actions:?}")
        };
        (c, lease.clone())
    }

    #[test]
    fn solicit_advertise_request_reply() {
        let now = Instant::now();
        let (c, lease) = bound(now);
        assert_eq!(c.phase(), Phase::Bound);
        assert_eq!(lease.address, "fd00:99::50".parse::<Ipv6Addr>().unwrap());
        assert_eq!(lease.dns, vec!["fd00:99::1".parse::<Ipv6Addr>().unwrap()]);
        assert_eq!(c.deadline(), Some(now + Duration::from_secs(1000)));
    }

    #[test]
    fn renew_rebind_then_expiry() {
        let now = Instant::now();
        let (mut c, _) = bound(now);
        let t1 = now + Duration::from_secs(1000);
        let renew = sent(&c.on_timeout(t1));
        assert_eq!(renew.msg_type(), MessageType::Renew);
        assert!(renew.opts().get(OptionCode::ServerId).is_some());
        // Nobody answers: retransmits until T2, then REBIND without server id.
        let mut t = t1;
        while c.phase() == Phase::Renewing {
            t = c.deadline().unwrap();
            let actions = c.on_timeout(t);
            if c.phase() == Phase::Rebinding {
                let rebind = sent(&actions);
                assert_eq!(rebind.msg_type(), MessageType::Rebind);
                assert!(rebind.opts().get(OptionCode::ServerId).is_none());
            }
        }
        assert_eq!(t, now + Duration::from_secs(2000));
        // Still nobody: the address goes at the end of its valid lifetime.
        loop {
            t = c.deadline().unwrap();
            let actions = c.on_timeout(t);
            if let Some(Action::Deconfigure(_)) = actions.first() {
                assert_eq!(t, now + Duration::from_secs(3600));
                assert_eq!(c.phase(), Phase::Soliciting);
                break;
            }
            assert!(t < now + Duration::from_secs(3600));
        }
    }

    #[test]
    fn a_renewal_reply_extends_the_lease() {
        let now = Instant::now();
        let (mut c, _) = bound(now);
        let t1 = now + Duration::from_secs(1000);
        let renew = sent(&c.on_timeout(t1));
        let reply = answer(&renew, MessageType::Reply, 3600, 1000, 2000);
        let actions = c.on_packet(t1, &reply).unwrap();
        assert!(matches!(actions.first(), Some(Action::Configure(_))));
        assert_eq!(c.deadline(), Some(t1 + Duration::from_secs(1000)));
    }

    #[test]
    fn foreign_broken_and_refusing_replies_are_ignored() {
        let now = Instant::now();
        let mut c = Client::new(&MAC, fastrand::Rng::with_seed(2), now);
        let solicit = sent(&c.on_timeout(now));
        let mut other = Client::new(&[9, 9, 9, 9, 9, 9], fastrand::Rng::with_seed(2), now);
        let theirs = sent(&other.on_timeout(now));
        let foreign = answer(&theirs, MessageType::Advertise, 3600, 0, 0);
        assert!(c.on_packet(now, &foreign).is_err());
        for junk in [&[][..], &[2], &[2, 0, 0], &[7, 1, 2, 3, 0, 1, 0, 200]] {
            assert!(c.on_packet(now, junk).is_err(), "{junk:?}");
        }
        // NoAddrsAvail at the top: not a server to use.
        let mut m = Message::decode(&mut Decoder::new(&answer(
            &solicit,
            MessageType::Advertise,
            3600,
            0,
            0,
        )))
        .unwrap();
        m.opts_mut().insert(DhcpOption::StatusCode(StatusCode {
            status: Status::NoAddrsAvail,
            msg: "none".into(),
        }));
        let mut b = Vec::new();
        m.encode(&mut Encoder::new(&mut b)).unwrap();
        assert!(matches!(
            c.on_packet(now, &b),
            Err(Ignored::Status(Status::NoAddrsAvail, _))
        ));
        assert_eq!(c.phase(), Phase::Soliciting);
        // Zero valid lifetime: no address.
        let zero = answer(&solicit, MessageType::Advertise, 0, 0, 0);
        assert_eq!(c.on_packet(now, &zero), Err(Ignored::NoAddress));
    }

    #[test]
    fn timers_never_outlast_the_address() {
        let now = Instant::now();
        let mut c = Client::new(&MAC, fastrand::Rng::with_seed(4), now);
        let solicit = sent(&c.on_timeout(now));
        let request = sent(
            &c.on_packet(now, &answer(&solicit, MessageType::Advertise, 1800, 0, 0))
                .unwrap(),
        );
        // T1/T2 beyond the valid lifetime, "infinite" even.
        let reply = answer(&request, MessageType::Reply, 1800, u32::MAX, u32::MAX);
        c.on_packet(now, &reply).unwrap();
        let t1 = c.deadline().unwrap();
        assert!(t1 <= now + Duration::from_secs(900), "{:?}", t1 - now);
        // Renewing retransmits stop at T2, which is before expiry.
        let mut t = t1;
        c.on_timeout(t);
        while c.phase() == Phase::Renewing {
            t = c.deadline().unwrap();
            c.on_timeout(t);
        }
        assert!(t < now + Duration::from_secs(1800), "{:?}", t - now);
    }

    #[test]
    fn a_lost_binding_is_requested_again() {
        let now = Instant::now();
        let (mut c, _) = bound(now);
        let t1 = now + Duration::from_secs(1000);
        let renew = sent(&c.on_timeout(t1));
        let mut m = blank(MessageType::Reply, renew.xid_num());
        let client_id = renew.opts().get(OptionCode::ClientId).unwrap().clone();
        let iaid = match renew.opts().get(OptionCode::IANA) {
            Some(DhcpOption::IANA(ia)) => ia.id,
            _ => unreachable!(),
        };
        let mut ia_opts = dhcproto::v6::DhcpOptions::new();
        ia_opts.insert(DhcpOption::StatusCode(StatusCode {
            status: Status::NoBinding,
            msg: "unknown".into(),
        }));
        m.opts_mut().insert(client_id);
        m.opts_mut().insert(DhcpOption::ServerId(SERVER.to_vec()));
        m.opts_mut().insert(DhcpOption::IANA(IANA {
            id: iaid,
            t1: 0,
            t2: 0,
            opts: ia_opts,
        }));
        let mut b = Vec::new();
        m.encode(&mut Encoder::new(&mut b)).unwrap();
        let request = sent(&c.on_packet(t1, &b).unwrap());
        assert_eq!(request.msg_type(), MessageType::Request);
        assert_eq!(c.phase(), Phase::Requesting);
    }

    #[test]
    fn solicit_backs_off_to_the_cap() {
        let now = Instant::now();
        let mut c = Client::new(&MAC, fastrand::Rng::with_seed(3), now);
        let mut t = now;
        let mut last = Duration::ZERO;
        for _ in 0..12 {
            c.on_timeout(t);
            let next = c.deadline().unwrap();
            last = next - t;
            t = next;
        }
        assert!(last <= SOL_MAX_RT + SOL_MAX_RT / 10, "{last:?}");
        assert!(last >= SOL_MAX_RT - SOL_MAX_RT / 10, "{last:?}");
    }
}
