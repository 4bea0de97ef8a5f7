//! Which path a peer's datagrams take: one of its candidate endpoints, or
//! a relay. Pure state, driven by the device loop, so it is tested on its
//! own.
//!
//! - A peer is **up** while authenticated datagrams from it keep arriving
//!   (keepalives every 25 s make that true of any live peer).
//! - While it is not up, every [`RETRY`] the next option is tried: its
//!   direct candidates in order, then the relays that say they reach it,
//!   round and round. Each try sends a fresh handshake initiation.
//! - An authenticated datagram makes its path the current one (roaming:
//!   the source of a peer behind NAT is its mapping, whatever it
//!   published).
//! - While a peer is up through a relay, every [`PROBE`] one of its direct
//!   candidates gets a handshake, the relay carrying on meanwhile: when a
//!   NAT or firewall lets a direct path through again, the answer arrives
//!   on it and the peer moves off the relay.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long without an authenticated datagram before a peer counts as
/// down and its other paths are tried. Above the 25 s keepalive, with
/// room for one lost keepalive's retry.
pub const STALE: Duration = Duration::from_secs(40);
/// How long one option is given before the next: WireGuard's own
/// handshake retry time (REKEY_TIMEOUT).
pub const RETRY: Duration = Duration::from_secs(5);
/// How often a peer up through a relay is tried directly.
pub const PROBE: Duration = Duration::from_secs(60);

/// Where a peer's datagrams go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Path {
    Direct(SocketAddr),
    /// Through the peer with this public key.
    Relay([u8; 32]),
}

#[derive(Debug, Clone)]
pub struct Selector {
    candidates: Vec<SocketAddr>,
    relays: Vec<[u8; 32]>,
    current: Option<Path>,
    /// Index into candidates ++ relays of the next option to try.
    next: usize,
    last_rx: Option<Instant>,
    last_try: Option<Instant>,
    /// Direct tries of a relayed peer: when the last was (or the relay
    /// took over), and which candidate is next.
    last_probe: Option<Instant>,
    next_probe: usize,
}

impl Selector {
    pub fn new(candidates: Vec<SocketAddr>, relays: Vec<[u8; 32]>) -> Selector {
        let mut s = Selector {
            candidates: Vec::new(),
            relays: Vec::new(),
            current: None,
            next: 0,
            last_rx: None,
            last_try: None,
            last_probe: None,
            next_probe: 0,
        };
        s.update(candidates, relays);
        s
    }

    /// New options from discovery. The current path stays while it works
    /// or while it is still an option.
    pub fn update(&mut self, candidates: Vec<SocketAddr>, relays: Vec<[u8; 32]>) {
        self.candidates = candidates;
        self.relays = relays;
        if let Some(Path::Relay(k)) = self.current
            && !self.relays.contains(&k)
        {
            // The relay no longer reaches the peer (or us): its path is
            // dead, whatever arrived over it lately. Look again at once.
            self.last_rx = None;
            self.last_try = None;
            self.current = None;
        }
        let still_offered = match self.current {
            Some(Path::Direct(a)) => self.candidates.contains(&a),
            Some(Path::Relay(k)) => self.relays.contains(&k),
            None => false,
        };
        if self.last_rx.is_none() && !still_offered {
            self.current = self.candidates.first().copied().map(Path::Direct);
        }
        if self.next >= self.options() {
            self.next = 0;
        }
    }

    fn options(&self) -> usize {
        self.candidates.len() + self.relays.len()
    }

    fn option(&self, i: usize) -> Option<Path> {
        match self.candidates.get(i) {
            Some(a) => Some(Path::Direct(*a)),
            None => self
                .relays
                .get(i - self.candidates.len())
                .copied()
                .map(Path::Relay),
        }
    }

    /// An authenticated datagram arrived over `path`. Returns whether the
    /// current path changed.
    pub fn received(&mut self, path: Path, now: Instant) -> bool {
        self.last_rx = Some(now);
        let changed = self.current != Some(path);
        self.current = Some(path);
        changed
    }

    pub fn current(&self) -> Option<Path> {
        self.current
    }

    /// When the last authenticated datagram arrived.
    pub fn last_received(&self) -> Option<Instant> {
        self.last_rx
    }

    pub fn is_up(&self, now: Instant) -> bool {
        self.last_rx
            .is_some_and(|t| now.saturating_duration_since(t) < STALE)
    }

    /// Moves to the next option when the peer is not up and the last try
    /// has had its time; or, when it is up through a relay, picks a direct
    /// candidate to probe every [`PROBE`] (the current path stays). Returns
    /// the path to send a handshake to.
    pub fn tick(&mut self, now: Instant) -> Option<Path> {
        if self.is_up(now) {
            return self.probe(now);
        }
        self.last_probe = None;
        if self.options() == 0 {
            return None;
        }
        if self
            .last_try
            .is_some_and(|t| now.saturating_duration_since(t) < RETRY)
        {
            return None;
        }
        let path = self.option(self.next)?;
        self.next = (self.next + 1) % self.options();
        self.last_try = Some(now);
        self.current = Some(path);
        Some(path)
    }

    fn probe(&mut self, now: Instant) -> Option<Path> {
        if !matches!(self.current, Some(Path::Relay(_))) || self.candidates.is_empty() {
            self.last_probe = None;
            return None;
        }
        // The clock starts when the relay takes over.
        let since = *self.last_probe.get_or_insert(now);
        if now.saturating_duration_since(since) < PROBE {
            return None;
        }
        let a = self.candidates[self.next_probe % self.candidates.len()];
        self.next_probe = self.next_probe.wrapping_add(1);
        self.last_probe = Some(now);
        Some(Path::Direct(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn tries_candidates_then_relays_in_turn() {
        let t0 = Instant::now();
        let mut s = Selector::new(
            vec![addr("10.0.0.1:51820"), addr("192.0.2.1:51820")],
            vec![[9; 32]],
        );
        assert_eq!(s.current(), Some(Path::Direct(addr("10.0.0.1:51820"))));
        assert_eq!(s.tick(t0), Some(Path::Direct(addr("10.0.0.1:51820"))));
        assert_eq!(s.tick(t0 + Duration::from_secs(1)), None, "within RETRY");
        assert_eq!(
            s.tick(t0 + RETRY),
            Some(Path::Direct(addr("192.0.2.1:51820")))
        );
        assert_eq!(s.tick(t0 + RETRY * 2), Some(Path::Relay([9; 32])));
        assert_eq!(
            s.tick(t0 + RETRY * 3),
            Some(Path::Direct(addr("10.0.0.1:51820")))
        );
    }

    #[test]
    fn an_answer_wins_and_holds_until_stale() {
        let t0 = Instant::now();
        let mut s = Selector::new(vec![addr("10.0.0.1:51820")], vec![]);
        s.tick(t0);
        // The peer is behind NAT: it answers from its mapping.
        assert!(s.received(Path::Direct(addr("198.51.100.7:40000")), t0));
        assert!(s.is_up(t0 + Duration::from_secs(30)));
        assert_eq!(s.tick(t0 + Duration::from_secs(30)), None);
        // New options from discovery do not move a working path.
        s.update(vec![addr("10.0.0.2:51820")], vec![]);
        assert_eq!(s.current(), Some(Path::Direct(addr("198.51.100.7:40000"))));
        // Silent past STALE: back to trying.
        assert!(!s.is_up(t0 + STALE));
        assert_eq!(
            s.tick(t0 + STALE),
            Some(Path::Direct(addr("10.0.0.2:51820")))
        );
    }

    #[test]
    fn a_withdrawn_relay_is_left_at_once() {
        let t0 = Instant::now();
        let mut s = Selector::new(vec![addr("10.0.0.1:51820")], vec![[7; 32], [8; 32]]);
        s.received(Path::Relay([7; 32]), t0);
        assert!(s.is_up(t0));
        s.update(vec![addr("10.0.0.1:51820")], vec![[8; 32]]);
        assert!(!s.is_up(t0), "not up through a relay that is gone");
        assert_eq!(s.current(), Some(Path::Direct(addr("10.0.0.1:51820"))));
        assert!(s.tick(t0).is_some(), "tried again without waiting");
    }

    #[test]
    fn a_relayed_peer_is_probed_directly_and_moves_when_it_answers() {
        let t0 = Instant::now();
        let (a, b) = (addr("10.0.0.1:51820"), addr("192.0.2.1:51820"));
        let mut s = Selector::new(vec![a, b], vec![[7; 32]]);
        s.received(Path::Relay([7; 32]), t0);
        assert_eq!(s.tick(t0), None, "the relay just took over");
        let mut t = t0;
        for expected in [a, b, a] {
            // Keepalives keep arriving through the relay.
            s.received(Path::Relay([7; 32]), t + PROBE - Duration::from_secs(1));
            assert_eq!(s.tick(t + PROBE - Duration::from_secs(1)), None);
            t += PROBE;
            s.received(Path::Relay([7; 32]), t);
            assert_eq!(s.tick(t), Some(Path::Direct(expected)));
            assert_eq!(
                s.current(),
                Some(Path::Relay([7; 32])),
                "the relay carries on"
            );
        }
        // The direct answer arrives: the peer moves, and probing stops.
        assert!(s.received(Path::Direct(a), t));
        s.received(Path::Direct(a), t + PROBE);
        assert_eq!(s.tick(t + PROBE), None);
    }

    #[test]
    fn a_peer_up_directly_is_not_probed() {
        let t0 = Instant::now();
        let mut s = Selector::new(vec![addr("10.0.0.1:51820")], vec![[7; 32]]);
        s.received(Path::Direct(addr("10.0.0.1:51820")), t0);
        s.tick(t0);
        s.received(Path::Direct(addr("10.0.0.1:51820")), t0 + PROBE);
        assert_eq!(s.tick(t0 + PROBE), None);
    }

    #[test]
    fn no_options_no_path() {
        let mut s = Selector::new(vec![], vec![]);
        assert_eq!(s.current(), None);
        assert_eq!(s.tick(Instant::now()), None);
    }
}
