//! The datapath loop: TUN ⇄ boringtun's noise core ⇄ UDP, on one tokio
//! task.
//!
//! - A packet from the TUN goes to the peer whose allowed IPs hold its
//!   destination (longest prefix), is encapsulated and sent to that
//!   peer's endpoint. The kernel hands over TCP segments of up to 64 KiB
//!   ([`super::offload`]): they are cut into packets, and the run of
//!   datagrams they become leaves in one send (UDP GSO).
//! - Datagrams arrive in runs too (UDP GRO); the packets decrypted from
//!   one run are joined per TCP flow and written to the TUN together.
//! - A datagram from the network is checked first by one rate limiter
//!   shared by all peers (MAC1, and cookies when under load), so junk
//!   costs a hash and never reaches a peer. A handshake initiation is
//!   matched to a peer by the static key inside it; every other message
//!   by its receiver index (our index of the peer, shifted as boringtun
//!   does). Decrypted packets are written to the TUN only if their
//!   source is in the sending peer's allowed IPs (cryptokey routing).
//!   An authenticated datagram sets the peer's endpoint to its source
//!   (roaming).
//! - Every [`TICK`], `update_timers` for each peer (handshake retries,
//!   rekeys, keepalives), and endpoint selection ([`super::select`]): a
//!   peer that is not up gets a handshake on its next candidate path.
//! - Peers change while it runs ([`PeerControl::set`]): a peer keeps its
//!   session across changes of its allowed IPs or candidates.
//! - It relays for its peers (opaque WireGuard datagrams between two peers
//!   that are up with direct paths, [`super::wire`]), and hands gossiped
//!   records to the controller ([`Device::gossip_inbox`]).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::PublicKey;
use ipnet::IpNet;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

mod status;
use status::Counter;
pub use status::{
    DeviceError, DeviceStatus, PeerConfig, PeerControl, PeerState, PeerStatus, SharedStatus,
};

use super::keys::NodeKey;
use super::offload::{self, Coalescer, Packets, VNET_HDR_LEN, VnetHdr};
use super::ping::PING_AFTER;
use super::select::{Path, Selector};
use super::tun::Tun;
use super::udp;
use super::wire::{self, Message};
use slate_common::ratelimit::LogLimiter;

/// How often peers' timers run.
pub const TICK: Duration = Duration::from_millis(250);
/// WireGuard's usual keepalive, for peers that may sit behind NAT.
pub const PERSISTENT_KEEPALIVE: u16 = 25;
/// Handshake initiations per second before cookies are demanded (as in
/// boringtun's own device).
const HANDSHAKE_RATE_LIMIT: u64 = 100;
/// Largest IP packet, plus WireGuard's overhead.
const BUF: usize = 65535 + 148;
/// A TUN read: the virtio-net header and a segment of up to 64 KiB.
const TUN_BUF: usize = VNET_HDR_LEN + 65535;
/// A UDP receive: a run the kernel joined (GRO) stays below 64 KiB, but
/// a run sent with GSO may arrive whole; room for the largest (64 of the
/// largest datagrams) so that nothing is cut off.
const UDP_BUF: usize = 64 * (1500 + 36);
/// At most this many datagrams, of this many bytes in all, leave in one
/// send (the kernel's UDP GSO limits: 64 segments, a 16-bit length).
const MAX_RUN: usize = 64;
const MAX_RUN_BYTES: usize = 65000;
/// After the kernel refused a GSO send, datagrams go one by one for this
/// long before GSO is tried again (a path or device may have changed).
const GSO_RETRY: Duration = Duration::from_secs(300);
/// A WireGuard data message (type 4), as opposed to handshake messages.
const DATA_MESSAGE: u8 = 4;
/// Gossiped records waiting for the controller; more are dropped (and
/// counted as rejected): a flood costs a bounded queue.
const GOSSIP_QUEUE: usize = 256;
/// boringtun keeps our index of a peer in the top 24 bits of its session
/// indexes.
const MAX_SLOTS: u32 = 1 << 24;

struct Peer {
    tunn: Tunn,
    config: PeerConfig,
    path: Selector,
    /// The last liveness ping ([`super::ping`]) and its sequence number.
    pinged: Option<Instant>,
    pings: u16,
}

/// A gossiped record and where it came from.
pub type Gossip = (SocketAddr, Vec<u8>);

/// The mesh device: a TUN, a UDP socket, the peers.
pub struct Device {
    key: NodeKey,
    tun: Tun,
    udp: Arc<UdpSocket>,
    peers: HashMap<u32, Peer>,
    by_key: HashMap<[u8; 32], u32>,
    next_slot: u32,
    /// (network, peer slot), longest prefix first.
    routes: Vec<(IpNet, u32)>,
    limiter: Arc<RateLimiter>,
    junk_log: LogLimiter,
    status: SharedStatus,
    control: Arc<watch::Sender<Vec<PeerConfig>>>,
    updates: watch::Receiver<Vec<PeerConfig>>,
    gossip_tx: mpsc::Sender<Gossip>,
    gossip_rx: Option<mpsc::Receiver<Gossip>>,
    /// Scratch space to frame relayed datagrams.
    frame: Vec<u8>,
    /// The packets a TUN read was cut into.
    packets: Packets,
    /// Encrypted datagrams for one peer, waiting to leave in one send.
    run: Run,
    /// Set when the kernel refused a GSO send: one send per datagram until
    /// then.
    gso_off_until: Option<Instant>,
    /// Decrypted packets of one UDP receive, on their way to the TUN.
    coalescer: Coalescer,
    /// This node's mesh address, the source of liveness pings (none
    /// without it).
    ping_from: Option<Ipv6Addr>,
}

/// Datagrams for one peer, back to back, all of `size` bytes but the
/// last (which ends the run when it is shorter).
#[derive(Default)]
struct Run {
    slot: u32,
    bytes: Vec<u8>,
    size: usize,
    count: usize,
    ended: bool,
}

/// Which of our peers a datagram is for, if any.
enum Recipient {
    /// The peer's slot, and whether the datagram, once it decrypts or
    /// completes a handshake, says where the peer is. A cookie reply does
    /// not: it proves nothing about its sender (WireGuard does not roam on
    /// one either), and anyone who saw our initiation could forge one.
    Peer(u32, bool),
    Unknown(&'static str),
}

impl Device {
    pub fn new(
        key: NodeKey,
        tun: Tun,
        udp: UdpSocket,
        peers: Vec<PeerConfig>,
    ) -> Result<Device, DeviceError> {
        let limiter = Arc::new(RateLimiter::new(&key.public(), HANDSHAKE_RATE_LIMIT));
        let (control, updates) = watch::channel(Vec::new());
        let (gossip_tx, gossip_rx) = mpsc::channel(GOSSIP_QUEUE);
        let mut device = Device {
            key,
            tun,
            udp: Arc::new(udp),
            peers: HashMap::new(),
            by_key: HashMap::new(),
            next_slot: 0,
            routes: Vec::new(),
            limiter,
            junk_log: LogLimiter::new(Duration::from_secs(60)),
            status: SharedStatus::default(),
            control: Arc::new(control),
            updates,
            gossip_tx,
            gossip_rx: Some(gossip_rx),
            frame: Vec::with_capacity(BUF),
            packets: Packets::default(),
            run: Run::default(),
            gso_off_until: None,
            coalescer: Coalescer::default(),
            ping_from: None,
        };
        udp::enable_gro(&device.udp);
        device.set_peers(peers);
        device.publish_status();
        Ok(device)
    }

    pub fn status(&self) -> SharedStatus {
        self.status.clone()
    }

    /// Pings peers that have gone quiet, from `address` (this node's mesh
    /// address) to theirs ([`super::ping`]).
    pub fn ping_from(&mut self, address: Ipv6Addr) {
        self.ping_from = Some(address);
    }

    /// Changes the peers while the device runs.
    pub fn control(&self) -> PeerControl {
        PeerControl(self.control.clone())
    }

    /// The device's UDP socket, to send gossip from the mesh port.
    pub fn socket(&self) -> Arc<UdpSocket> {
        self.udp.clone()
    }

    /// Gossiped records as they arrive (once; `None` after the first call).
    pub fn gossip_inbox(&mut self) -> Option<mpsc::Receiver<Gossip>> {
        self.gossip_rx.take()
    }

    /// Runs until the TUN fails (it does not on its own while the device
    /// exists); drop the future to stop.
    pub async fn run(mut self) -> Result<std::convert::Infallible, DeviceError> {
        enum Event {
            Tun(std::io::Result<usize>),
            Udp(std::io::Result<(usize, SocketAddr, Option<usize>)>),
            Peers,
            Tick,
        }
        let mut from_tun = vec![0u8; TUN_BUF];
        let mut from_udp = vec![0u8; UDP_BUF];
        let mut out = vec![0u8; BUF];
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_reset = Instant::now();
        let udp = self.udp.clone();
        loop {
            let event = tokio::select! {
                r = self.tun.recv(&mut from_tun) => Event::Tun(r),
                r = udp::recv_batch(&udp, &mut from_udp) => Event::Udp(r),
                Ok(()) = self.updates.changed() => Event::Peers,
                _ = tick.tick() => Event::Tick,
            };
            match event {
                Event::Tun(Ok(n)) => self.outbound(&mut from_tun[..n], &mut out).await,
                Event::Tun(Err(source)) => {
                    return Err(DeviceError::TunRead {
                        name: self.tun.name().to_owned(),
                        source,
                    });
                }
                Event::Udp(Ok((n, src, size))) => {
                    let src = canonical(src);
                    for datagram in from_udp[..n].chunks(size.unwrap_or(n).max(1)) {
                        self.datagram(datagram, src, &mut out).await;
                    }
                    self.write_to_tun().await;
                }
                Event::Udp(Err(e)) => {
                    // ICMP errors surface here on some kernels; never fatal.
                    if self.junk_log.allow("udp receive", Instant::now()).is_some() {
                        tracing::warn!("mesh: receiving: {e}");
                    }
                }
                Event::Peers => {
                    let peers = self.updates.borrow_and_update().clone();
                    self.set_peers(peers);
                    self.publish_status();
                }
                Event::Tick => {
                    // The shared limiter counts handshakes per second.
                    if last_reset.elapsed() >= Duration::from_secs(1) {
                        self.limiter.reset_count();
                        last_reset = Instant::now();
                    }
                    self.timers(&mut out).await;
                    self.publish_status();
                }
            }
        }
    }

    /// Makes the peer set `configs`: known keys keep their session and
    /// path, new keys get a slot, missing keys go.
    fn set_peers(&mut self, configs: Vec<PeerConfig>) {
        let own = self.key.public_bytes();
        let wanted: HashMap<[u8; 32], PeerConfig> = configs
            .into_iter()
            .filter(|c| c.public_key != own)
            .map(|c| (c.public_key, c))
            .collect();
        let gone: Vec<[u8; 32]> = self
            .by_key
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .copied()
            .collect();
        for key in gone {
            if let Some(slot) = self.by_key.remove(&key) {
                self.peers.remove(&slot);
            }
        }
        for (key, config) in wanted {
            if let Some(slot) = self.by_key.get(&key) {
                let peer = self.peers.get_mut(slot).expect("by_key and peers agree");
                peer.path
                    .update(config.endpoints.clone(), config.relays.clone());
                peer.config = config;
                continue;
            }
            if self.next_slot >= MAX_SLOTS {
                tracing::error!("mesh: no slot left for a new peer; restart networkd");
                continue;
            }
            let slot = self.next_slot;
            self.next_slot += 1;
            let peer = Peer {
                tunn: Tunn::new(
                    self.key.secret().clone(),
                    PublicKey::from(key),
                    None,
                    config.persistent_keepalive,
                    slot,
                    Some(self.limiter.clone()),
                ),
                path: Selector::new(config.endpoints.clone(), config.relays.clone()),
                pinged: None,
                pings: 0,
                config,
            };
            self.peers.insert(slot, peer);
            self.by_key.insert(key, slot);
        }
        self.routes = self
            .peers
            .iter()
            .flat_map(|(slot, p)| p.config.allowed_ips.iter().map(|net| (net.trunc(), *slot)))
            .collect();
        self.routes
            .sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
    }

    /// One TUN read: cut into packets, each encrypted for its peer.
    async fn outbound(&mut self, read: &mut [u8], out: &mut [u8]) {
        let Some(hdr) = VnetHdr::parse(read) else {
            return;
        };
        let mut packets = std::mem::take(&mut self.packets);
        packets.clear();
        if let Err(e) = offload::split(hdr, &mut read[VNET_HDR_LEN..], &mut packets) {
            self.status.add(Counter::Unroutable, 1);
            if self.junk_log.allow("tun", Instant::now()).is_some() {
                tracing::warn!("mesh: dropping a segment from the TUN: {e} ({hdr:?})");
            }
        }
        if packets.len() > 1 {
            self.status.add(Counter::SegmentsCut, 1);
        }
        for packet in packets.iter() {
            self.encapsulate(packet, out).await;
        }
        self.packets = packets;
        self.send_run().await;
    }

    async fn encapsulate(&mut self, packet: &[u8], out: &mut [u8]) {
        let slot = Tunn::dst_address(packet).and_then(|dst| route(&self.routes, dst));
        let Some(slot) = slot else {
            // Router solicitations, MLD, traffic for a peer we do not know.
            self.status.add(Counter::Unroutable, 1);
            return;
        };
        let peer = self.peers.get_mut(&slot).expect("routes follow peers");
        match peer.tunn.encapsulate(packet, out) {
            TunnResult::WriteToNetwork(data) if data.first() == Some(&DATA_MESSAGE) => {
                let len = data.len();
                self.queue(slot, &out[..len]).await;
            }
            TunnResult::WriteToNetwork(data) => {
                // A handshake initiation: the packet waits in boringtun.
                let len = data.len();
                self.send_to_peer(slot, &out[..len]).await;
            }
            TunnResult::Done => {}
            TunnResult::Err(e) => tracing::debug!("mesh: encapsulating for peer {slot}: {e:?}"),
            TunnResult::WriteToTunnelV4(..) | TunnResult::WriteToTunnelV6(..) => {}
        }
    }

    /// Adds a data message to the run, sending the run first if it cannot
    /// take it (another peer, a larger size, full, or ended).
    async fn queue(&mut self, slot: u32, datagram: &[u8]) {
        let run = &self.run;
        if run.count > 0
            && (run.slot != slot
                || run.ended
                || datagram.len() > run.size
                || run.count >= MAX_RUN
                || run.bytes.len() + datagram.len() > MAX_RUN_BYTES)
        {
            self.send_run().await;
        }
        let run = &mut self.run;
        if run.count == 0 {
            run.slot = slot;
            run.size = datagram.len();
        }
        run.bytes.extend_from_slice(datagram);
        run.count += 1;
        run.ended = datagram.len() < run.size;
    }

    /// Sends the run: in one call to a peer reached directly (UDP GSO),
    /// else datagram by datagram.
    async fn send_run(&mut self) {
        if self.run.count == 0 {
            return;
        }
        let mut run = std::mem::take(&mut self.run);
        let direct = match self.peers.get(&run.slot).and_then(|p| p.path.current()) {
            Some(Path::Direct(to))
                if run.count > 1 && self.gso_off_until.is_none_or(|t| Instant::now() >= t) =>
            {
                Some(to)
            }
            _ => None,
        };
        let sent = match direct {
            Some(to) => match udp::send_batch(&self.udp, &run.bytes, run.size, to).await {
                Ok(()) => true,
                Err(e) if gso_unsupported(&e) => {
                    tracing::warn!(
                        "mesh: the kernel refused a GSO send ({e}); sending datagrams one by one for {} s",
                        GSO_RETRY.as_secs()
                    );
                    self.gso_off_until = Some(Instant::now() + GSO_RETRY);
                    false
                }
                Err(e) => {
                    tracing::debug!("mesh: sending to {to}: {e}");
                    true
                }
            },
            None => false,
        };
        if !sent {
            for datagram in run.bytes.chunks(run.size) {
                self.send_to_peer(run.slot, datagram).await;
            }
        }
        run.bytes.clear();
        run.count = 0;
        run.ended = false;
        self.run = run;
    }

    /// Writes what the last UDP receive decrypted to the TUN.
    async fn write_to_tun(&mut self) {
        self.coalescer.finish();
        if self.coalescer.joined() > 0 {
            self.status
                .add(Counter::SegmentsJoined, self.coalescer.joined() as u64);
        }
        let mut refused = None;
        for write in self.coalescer.writes() {
            if let Err(e) = self.tun.send(write).await {
                // A joined segment the kernel refused: its packets, as
                // they came, one by one.
                if let Some(hdr) = VnetHdr::parse(write).filter(|h| h.gso_type != 0) {
                    let mut packets = Packets::default();
                    let mut segment = write[VNET_HDR_LEN..].to_vec();
                    if offload::split(hdr, &mut segment, &mut packets).is_ok() {
                        let mut one = Vec::new();
                        for packet in packets.iter() {
                            one.clear();
                            one.extend_from_slice(&[0; VNET_HDR_LEN]);
                            one.extend_from_slice(packet);
                            let _ = self.tun.send(&one).await;
                        }
                    }
                }
                refused = Some(e);
            }
        }
        self.coalescer.clear();
        if let Some(e) = refused
            && self.junk_log.allow("tun write", Instant::now()).is_some()
        {
            tracing::warn!("mesh: the TUN refused a write: {e}");
        }
    }

    /// Sends a WireGuard datagram to a peer on its current path.
    async fn send_to_peer(&mut self, slot: u32, data: &[u8]) {
        let path = self.peers.get(&slot).and_then(|p| p.path.current());
        self.send_on(slot, path, data).await;
    }

    /// Sends a WireGuard datagram to a peer on `path`.
    async fn send_on(&mut self, slot: u32, path: Option<Path>, data: &[u8]) {
        let Some(peer) = self.peers.get(&slot) else {
            return;
        };
        match path {
            Some(Path::Direct(to)) => send(&self.udp, data, to).await,
            Some(Path::Relay(relay)) => match self.direct_endpoint(&relay) {
                Some(to) => {
                    wire::to_relay(&peer.config.public_key, data, &mut self.frame);
                    send(&self.udp, &self.frame, to).await;
                }
                None => self.status.add(Counter::Unroutable, 1),
            },
            None => self.status.add(Counter::Unroutable, 1),
        }
    }

    /// The direct endpoint of the peer with `key`, if it is up directly.
    fn direct_endpoint(&self, key: &[u8; 32]) -> Option<SocketAddr> {
        let peer = self.peers.get(self.by_key.get(key)?)?;
        match peer.path.current() {
            Some(Path::Direct(a)) if peer.path.is_up(Instant::now()) => Some(a),
            _ => None,
        }
    }

    /// The peer that is up directly at `addr`.
    fn peer_at(&self, addr: SocketAddr) -> Option<u32> {
        let now = Instant::now();
        self.peers
            .iter()
            .find(|(_, p)| p.path.current() == Some(Path::Direct(addr)) && p.path.is_up(now))
            .map(|(slot, _)| *slot)
    }

    fn recipient(&self, packet: &Packet<'_>) -> Recipient {
        let by_index = |idx: u32, locates: bool| {
            let slot = idx >> 8;
            if self.peers.contains_key(&slot) {
                Recipient::Peer(slot, locates)
            } else {
                Recipient::Unknown("unknown receiver index")
            }
        };
        match packet {
            Packet::HandshakeInit(init) => {
                match parse_handshake_anon(self.key.secret(), &self.key.public(), init) {
                    Ok(half) => match self.by_key.get(&half.peer_static_public) {
                        Some(&slot) => Recipient::Peer(slot, true),
                        None => Recipient::Unknown("handshake from a key that is not a peer"),
                    },
                    Err(_) => Recipient::Unknown("handshake that does not open"),
                }
            }
            Packet::HandshakeResponse(r) => by_index(r.receiver_idx, true),
            Packet::PacketCookieReply(c) => by_index(c.receiver_idx, false),
            Packet::PacketData(d) => by_index(d.receiver_idx, true),
        }
    }

    /// Counts a refused datagram; says why at most once a minute per
    /// source (`why` is formatted only then).
    fn reject(&mut self, src: SocketAddr, why: impl std::fmt::Display) {
        self.status.add(Counter::Rejected, 1);
        if let Some(held) = self.junk_log.allow(&src.ip().to_string(), Instant::now()) {
            tracing::warn!(
                "mesh: dropping datagrams from {src}: {why} ({held} more since the last line)"
            );
        }
    }

    /// One datagram from the network: WireGuard, a relay frame or gossip.
    async fn datagram(&mut self, datagram: &[u8], src: SocketAddr, out: &mut [u8]) {
        match wire::parse(datagram) {
            Ok(Message::WireGuard(d)) => self.inbound(d, src, None, out).await,
            Ok(Message::ToRelay { destination, inner }) => {
                self.relay(src, destination, inner).await
            }
            Ok(Message::FromRelay { origin, inner }) => match self.peer_at(src) {
                Some(relay) => {
                    let relay_key = self.peers[&relay].config.public_key;
                    self.inbound(inner, src, Some((relay_key, origin)), out)
                        .await
                }
                None => self.reject(src, "relayed datagram from a peer that is not up"),
            },
            Ok(Message::Gossip(sealed)) => {
                // Checked before the copy: junk costs no allocation.
                if sealed.len() > slate_discovery::record::MAX_SEALED {
                    return self.reject(src, "oversized gossip frame");
                }
                if self.gossip_tx.try_send((src, sealed.to_vec())).is_err() {
                    self.reject(src, "gossip queue full");
                }
            }
            Err(e) => self.reject(src, format_args!("not a mesh message ({e})")),
        }
    }

    /// Passes a datagram on between two peers that are both up directly:
    /// never for strangers, so the node is no open relay.
    async fn relay(&mut self, src: SocketAddr, destination: [u8; 32], inner: &[u8]) {
        let Some(from) = self.peer_at(src) else {
            return self.reject(src, "relay request from a peer that is not up");
        };
        let Some(to) = self.direct_endpoint(&destination) else {
            return self.reject(src, "relay request for a peer that is not up here");
        };
        let origin = self.peers[&from].config.public_key;
        wire::from_relay(&origin, inner, &mut self.frame);
        send(&self.udp, &self.frame, to).await;
        self.status.add(Counter::Relayed, 1);
    }

    /// A WireGuard datagram, from `src` directly or, with `via` = (relay's
    /// key, origin's key), through the relay at `src`.
    async fn inbound(
        &mut self,
        datagram: &[u8],
        src: SocketAddr,
        via: Option<([u8; 32], [u8; 32])>,
        out: &mut [u8],
    ) {
        let verified = {
            let mut cookie = [0u8; 64];
            match self
                .limiter
                .verify_packet(Some(src.ip()), datagram, &mut cookie)
            {
                Ok(packet) => Ok(self.recipient(&packet)),
                Err(TunnResult::WriteToNetwork(reply)) => {
                    // Under load: the sender must prove its address first
                    // (relayed senders wait for the load to pass).
                    if via.is_none() {
                        send(&self.udp, reply, src).await;
                    }
                    return;
                }
                Err(TunnResult::Err(e)) => Err(e),
                Err(_) => Err(WireGuardError::InvalidPacket),
            }
        };
        let (slot, locates) = match verified {
            Ok(Recipient::Peer(slot, locates)) => (slot, locates),
            Ok(Recipient::Unknown(why)) => return self.reject(src, why),
            Err(e) => return self.reject(src, format_args!("not WireGuard ({e:?})")),
        };
        let path = match via {
            None => Path::Direct(src),
            Some((relay, origin)) => {
                if self.peers[&slot].config.public_key != origin {
                    return self.reject(src, "relayed datagram for another peer than named");
                }
                Path::Relay(relay)
            }
        };
        let src_ip = (via.is_none()).then_some(src.ip());
        let peer = self.peers.get_mut(&slot).expect("recipient is a peer");
        let mut replies: Vec<Vec<u8>> = Vec::new();
        match peer.tunn.decapsulate(src_ip, datagram, out) {
            TunnResult::Err(e) => {
                // Replays, stale indexes, forgeries with a valid MAC1.
                return self.reject(src, format_args!("peer {slot}: {e:?}"));
            }
            TunnResult::Done => {}
            TunnResult::WriteToNetwork(reply) => {
                replies.push(reply.to_vec());
                // Packets queued while the handshake was under way.
                while let TunnResult::WriteToNetwork(data) = peer.tunn.decapsulate(None, &[], out) {
                    replies.push(data.to_vec());
                }
            }
            TunnResult::WriteToTunnelV4(packet, from) => deliver(
                &mut self.coalescer,
                &peer.config,
                packet,
                IpAddr::V4(from),
                slot,
            ),
            TunnResult::WriteToTunnelV6(packet, from) => deliver(
                &mut self.coalescer,
                &peer.config,
                packet,
                IpAddr::V6(from),
                slot,
            ),
        }
        // Authenticated: this is where the peer is now (roaming).
        let before = peer.path.current();
        if locates && peer.path.received(path, Instant::now()) {
            tracing::info!("mesh: peer {slot} path {before:?} -> {path:?}");
        }
        for reply in replies {
            self.send_to_peer(slot, &reply).await;
        }
    }

    async fn timers(&mut self, out: &mut [u8]) {
        let now = Instant::now();
        let slots: Vec<u32> = self.peers.keys().copied().collect();
        for slot in slots {
            let peer = self.peers.get_mut(&slot).expect("slot listed");
            // A peer that is not up gets its next path and a handshake; a
            // relayed one, now and then, a handshake on a direct path.
            let (data, path) = match peer.path.tick(now) {
                Some(path) => {
                    tracing::debug!("mesh: peer {slot}: trying {path:?}");
                    (peer.tunn.format_handshake_initiation(out, true), Some(path))
                }
                None => (peer.tunn.update_timers(out), peer.path.current()),
            };
            match data {
                TunnResult::WriteToNetwork(data) => {
                    let len = data.len();
                    self.send_on(slot, path, &out[..len]).await;
                }
                TunnResult::Err(WireGuardError::ConnectionExpired) | TunnResult::Done => {}
                TunnResult::Err(e) => tracing::debug!("mesh: timers of peer {slot}: {e:?}"),
                TunnResult::WriteToTunnelV4(..) | TunnResult::WriteToTunnelV6(..) => {}
            }
            self.ping_if_quiet(slot, now, out).await;
        }
    }

    /// Sends a liveness ping to a peer that is up but has sent nothing for
    /// [`PING_AFTER`], once per that long.
    async fn ping_if_quiet(&mut self, slot: u32, now: Instant, out: &mut [u8]) {
        let Some(from) = self.ping_from else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&slot) else {
            return;
        };
        let quiet =
            |t: Option<Instant>| t.is_none_or(|t| now.saturating_duration_since(t) >= PING_AFTER);
        if !peer.path.is_up(now) || !quiet(peer.path.last_received()) || !quiet(peer.pinged) {
            return;
        }
        let Some(to) = peer.config.mesh_address() else {
            return;
        };
        peer.pinged = Some(now);
        peer.pings = peer.pings.wrapping_add(1);
        let packet = super::ping::echo_request(from, to, peer.pings);
        if let TunnResult::WriteToNetwork(data) = peer.tunn.encapsulate(&packet, out) {
            let len = data.len();
            self.send_to_peer(slot, &out[..len]).await;
        }
    }
}

/// The peer for `dst` in `routes` (sorted longest prefix first).
fn route(routes: &[(IpNet, u32)], dst: IpAddr) -> Option<u32> {
    routes
        .iter()
        .find(|(net, _)| net.contains(&dst))
        .map(|(_, i)| *i)
}

/// Passes a decrypted packet on to the TUN if its source is the peer's
/// to use.
fn deliver(to: &mut Coalescer, peer: &PeerConfig, packet: &[u8], from: IpAddr, i: u32) {
    if !peer.allowed_ips.iter().any(|net| net.contains(&from)) {
        tracing::debug!("mesh: peer {i} sent a packet from {from}, outside its allowed IPs");
        return;
    }
    to.push(packet);
}

/// Errors of a GSO send that mean the kernel or the outgoing device
/// cannot segment (no checksum offload, a segment above the path MTU),
/// not that the peer is unreachable.
fn gso_unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::EINVAL | libc::EOPNOTSUPP | libc::ENOPROTOOPT)
    )
}

/// IPv4 peers reach a dual-stack socket as `::ffff:a.b.c.d`: named as
/// IPv4, so they compare equal to the endpoints they publish.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

async fn send(udp: &UdpSocket, data: &[u8], to: SocketAddr) {
    if let Err(e) = udp.send_to(data, to).await {
        tracing::debug!("mesh: sending to {to}: {e}");
    }
}

#[cfg(test)]
mod tests;
