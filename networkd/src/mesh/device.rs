//! The datapath loop: TUN ⇄ boringtun's noise core ⇄ UDP, on one tokio
//! task.
//!
//! - A packet from the TUN goes to the peer whose allowed IPs hold its
//!   destination (longest prefix), is encapsulated and sent to that
//!   peer's endpoint.
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
//!   rekeys, keepalives).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::PublicKey;
use ipnet::IpNet;
use tokio::net::UdpSocket;

use super::keys::NodeKey;
use super::tun::Tun;
use crate::balancer::ratelimit::LogLimiter;

/// How often peers' timers run.
pub const TICK: Duration = Duration::from_millis(250);
/// WireGuard's usual keepalive, for peers that may sit behind NAT.
pub const PERSISTENT_KEEPALIVE: u16 = 25;
/// Handshake initiations per second before cookies are demanded (as in
/// boringtun's own device).
const HANDSHAKE_RATE_LIMIT: u64 = 100;
/// Largest IP packet, plus WireGuard's overhead.
const BUF: usize = 65535 + 148;

/// One peer as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub public_key: [u8; 32],
    /// Candidate endpoints, tried in turn until one answers; the source of
    /// the peer's authenticated datagrams then wins (roaming).
    pub endpoints: Vec<SocketAddr>,
    pub allowed_ips: Vec<IpNet>,
    pub persistent_keepalive: Option<u16>,
}

/// What a later `mesh-peers` resource shows about a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub public_key: [u8; 32],
    pub endpoint: Option<SocketAddr>,
    /// Payload bytes sent to and received from the peer (boringtun's
    /// counters: decrypted sizes, keepalives excluded).
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub last_handshake: Option<SystemTime>,
}

/// Counters of the whole device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceStatus {
    pub peers: Vec<PeerStatus>,
    /// Datagrams refused before reaching a peer (not WireGuard, bad MAC,
    /// unknown key or index).
    pub rejected_datagrams: u64,
    /// Packets from the TUN with no peer for their destination, or whose
    /// peer has no endpoint yet.
    pub unroutable_packets: u64,
}

/// Readable while the device runs; refreshed every [`TICK`].
pub type SharedStatus = Arc<Mutex<DeviceStatus>>;

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("reading from TUN device {name}")]
    TunRead {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("too many peers ({0}); at most 2^24")]
    TooManyPeers(usize),
}

struct Peer {
    tunn: Tunn,
    config: PeerConfig,
    endpoint: Option<SocketAddr>,
}

/// The mesh device: a TUN, a UDP socket, the peers.
pub struct Device {
    key: NodeKey,
    tun: Tun,
    udp: UdpSocket,
    peers: Vec<Peer>,
    by_key: HashMap<[u8; 32], usize>,
    /// (network, peer), longest prefix first.
    routes: Vec<(IpNet, usize)>,
    limiter: Arc<RateLimiter>,
    junk_log: LogLimiter,
    status: SharedStatus,
}

/// Which of our peers a datagram is for, if any.
enum Recipient {
    Peer(usize),
    Unknown(&'static str),
}

impl Device {
    pub fn new(
        key: NodeKey,
        tun: Tun,
        udp: UdpSocket,
        peers: Vec<PeerConfig>,
    ) -> Result<Device, DeviceError> {
        if peers.len() >= 1 << 24 {
            return Err(DeviceError::TooManyPeers(peers.len()));
        }
        let limiter = Arc::new(RateLimiter::new(&key.public(), HANDSHAKE_RATE_LIMIT));
        let mut by_key = HashMap::new();
        let mut routes = Vec::new();
        let peers: Vec<Peer> = peers
            .into_iter()
            .enumerate()
            .map(|(i, config)| {
                by_key.insert(config.public_key, i);
                routes.extend(config.allowed_ips.iter().map(|net| (net.trunc(), i)));
                Peer {
                    tunn: Tunn::new(
                        key.secret().clone(),
                        PublicKey::from(config.public_key),
                        None,
                        config.persistent_keepalive,
                        i as u32,
                        Some(limiter.clone()),
                    ),
                    endpoint: config.endpoints.first().copied(),
                    config,
                }
            })
            .collect();
        routes.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        let status = Arc::new(Mutex::new(DeviceStatus::default()));
        let device = Device {
            key,
            tun,
            udp,
            peers,
            by_key,
            routes,
            limiter,
            junk_log: LogLimiter::new(Duration::from_secs(60)),
            status,
        };
        device.publish_status();
        Ok(device)
    }

    pub fn status(&self) -> SharedStatus {
        self.status.clone()
    }

    /// Runs until the TUN fails (it does not on its own while the device
    /// exists); drop the future to stop.
    pub async fn run(mut self) -> Result<std::convert::Infallible, DeviceError> {
        enum Event {
            Tun(std::io::Result<usize>),
            Udp(std::io::Result<(usize, SocketAddr)>),
            Tick,
        }
        let mut from_tun = vec![0u8; BUF];
        let mut from_udp = vec![0u8; BUF];
        let mut out = vec![0u8; BUF];
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_reset = Instant::now();
        loop {
            let event = tokio::select! {
                r = self.tun.recv(&mut from_tun) => Event::Tun(r),
                r = self.udp.recv_from(&mut from_udp) => Event::Udp(r),
                _ = tick.tick() => Event::Tick,
            };
            match event {
                Event::Tun(Ok(n)) => self.outbound(&from_tun[..n], &mut out).await,
                Event::Tun(Err(source)) => {
                    return Err(DeviceError::TunRead {
                        name: self.tun.name().to_owned(),
                        source,
                    });
                }
                Event::Udp(Ok((n, src))) => self.inbound(&from_udp[..n], src, &mut out).await,
                Event::Udp(Err(e)) => {
                    // ICMP errors surface here on some kernels; never fatal.
                    if self.junk_log.allow("udp receive", Instant::now()).is_some() {
                        tracing::warn!("mesh: receiving: {e}");
                    }
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

    async fn outbound(&mut self, packet: &[u8], out: &mut [u8]) {
        let peer = Tunn::dst_address(packet).and_then(|dst| route(&self.routes, dst));
        let Some(i) = peer else {
            // Router solicitations, MLD, traffic for a peer we do not know.
            self.status.lock().unwrap().unroutable_packets += 1;
            return;
        };
        let peer = &mut self.peers[i];
        match peer.tunn.encapsulate(packet, out) {
            TunnResult::WriteToNetwork(data) => match peer.endpoint {
                Some(ep) => send(&self.udp, data, ep).await,
                None => self.status.lock().unwrap().unroutable_packets += 1,
            },
            TunnResult::Done => {}
            TunnResult::Err(e) => tracing::debug!("mesh: encapsulating for peer {i}: {e:?}"),
            TunnResult::WriteToTunnelV4(..) | TunnResult::WriteToTunnelV6(..) => {}
        }
    }

    fn recipient(&self, packet: &Packet<'_>) -> Recipient {
        let by_index = |idx: u32| {
            let i = (idx >> 8) as usize;
            if i < self.peers.len() {
                Recipient::Peer(i)
            } else {
                Recipient::Unknown("unknown receiver index")
            }
        };
        match packet {
            Packet::HandshakeInit(init) => {
                match parse_handshake_anon(self.key.secret(), &self.key.public(), init) {
                    Ok(half) => match self.by_key.get(&half.peer_static_public) {
                        Some(&i) => Recipient::Peer(i),
                        None => Recipient::Unknown("handshake from a key that is not a peer"),
                    },
                    Err(_) => Recipient::Unknown("handshake that does not open"),
                }
            }
            Packet::HandshakeResponse(r) => by_index(r.receiver_idx),
            Packet::PacketCookieReply(c) => by_index(c.receiver_idx),
            Packet::PacketData(d) => by_index(d.receiver_idx),
        }
    }

    fn reject(&mut self, src: SocketAddr, why: &str) {
        self.status.lock().unwrap().rejected_datagrams += 1;
        if let Some(held) = self.junk_log.allow(&src.ip().to_string(), Instant::now()) {
            tracing::warn!(
                "mesh: dropping datagrams from {src}: {why} ({held} more since the last line)"
            );
        }
    }

    async fn inbound(&mut self, datagram: &[u8], src: SocketAddr, out: &mut [u8]) {
        let verified = {
            let mut cookie = [0u8; 64];
            match self
                .limiter
                .verify_packet(Some(src.ip()), datagram, &mut cookie)
            {
                Ok(packet) => Ok(self.recipient(&packet)),
                Err(TunnResult::WriteToNetwork(reply)) => {
                    // Under load: the sender must prove its address first.
                    send(&self.udp, reply, src).await;
                    return;
                }
                Err(TunnResult::Err(e)) => Err(e),
                Err(_) => Err(WireGuardError::InvalidPacket),
            }
        };
        let i = match verified {
            Ok(Recipient::Peer(i)) => i,
            Ok(Recipient::Unknown(why)) => return self.reject(src, why),
            Err(e) => return self.reject(src, &format!("not WireGuard ({e:?})")),
        };
        let peer = &mut self.peers[i];
        match peer.tunn.decapsulate(Some(src.ip()), datagram, out) {
            TunnResult::Err(e) => {
                // Replays, stale indexes, forgeries with a valid MAC1.
                self.reject(src, &format!("peer {i}: {e:?}"));
                return;
            }
            TunnResult::Done => {}
            TunnResult::WriteToNetwork(reply) => {
                send(&self.udp, reply, src).await;
                // Packets queued while the handshake was under way.
                while let TunnResult::WriteToNetwork(data) = peer.tunn.decapsulate(None, &[], out) {
                    send(&self.udp, data, src).await;
                }
            }
            TunnResult::WriteToTunnelV4(packet, from) => {
                deliver(&self.tun, &peer.config, packet, IpAddr::V4(from), i).await
            }
            TunnResult::WriteToTunnelV6(packet, from) => {
                deliver(&self.tun, &peer.config, packet, IpAddr::V6(from), i).await
            }
        }
        // Authenticated: this is where the peer is now (roaming).
        if peer.endpoint != Some(src) {
            tracing::info!("mesh: peer {i} endpoint {:?} -> {src}", peer.endpoint);
            peer.endpoint = Some(src);
        }
    }

    async fn timers(&mut self, out: &mut [u8]) {
        for (i, peer) in self.peers.iter_mut().enumerate() {
            match peer.tunn.update_timers(out) {
                TunnResult::WriteToNetwork(data) => {
                    if let Some(ep) = peer.endpoint {
                        send(&self.udp, data, ep).await;
                    }
                }
                TunnResult::Err(WireGuardError::ConnectionExpired) | TunnResult::Done => {}
                TunnResult::Err(e) => tracing::debug!("mesh: timers of peer {i}: {e:?}"),
                TunnResult::WriteToTunnelV4(..) | TunnResult::WriteToTunnelV6(..) => {}
            }
        }
    }

    fn publish_status(&self) {
        let now = SystemTime::now();
        let peers = self
            .peers
            .iter()
            .map(|p| {
                let (since, tx, rx, _loss, _rtt) = p.tunn.stats();
                PeerStatus {
                    public_key: p.config.public_key,
                    endpoint: p.endpoint,
                    tx_bytes: tx as u64,
                    rx_bytes: rx as u64,
                    last_handshake: since.and_then(|d| now.checked_sub(d)),
                }
            })
            .collect();
        self.status.lock().unwrap().peers = peers;
    }
}

/// The peer for `dst` in `routes` (sorted longest prefix first).
fn route(routes: &[(IpNet, usize)], dst: IpAddr) -> Option<usize> {
    routes
        .iter()
        .find(|(net, _)| net.contains(&dst))
        .map(|(_, i)| *i)
}

/// Writes a decrypted packet to the TUN if its source is the peer's to
/// use.
async fn deliver(tun: &Tun, peer: &PeerConfig, packet: &[u8], from: IpAddr, i: usize) {
    if !peer.allowed_ips.iter().any(|net| net.contains(&from)) {
        tracing::debug!("mesh: peer {i} sent a packet from {from}, outside its allowed IPs");
        return;
    }
    if let Err(e) = tun.send(packet).await {
        tracing::debug!("mesh: writing to the TUN: {e}");
    }
}

async fn send(udp: &UdpSocket, data: &[u8], to: SocketAddr) {
    if let Err(e) = udp.send_to(data, to).await {
        tracing::debug!("mesh: sending to {to}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let mut routes: Vec<(IpNet, usize)> = vec![
            ("10.0.0.0/8".parse().unwrap(), 0),
            ("10.1.0.0/16".parse().unwrap(), 1),
        ];
        routes.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        let find = |ip: &str| route(&routes, ip.parse().unwrap());
        assert_eq!(find("10.1.2.3"), Some(1));
        assert_eq!(find("10.2.0.1"), Some(0));
        assert_eq!(find("192.168.0.1"), None);
    }
}
