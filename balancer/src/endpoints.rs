//! The endpoint set and its health: which control-plane endpoints the
//! balancer knows, which source named each, what the probes and the real
//! dials said about it, and in which order a new connection tries them.
//! Plain data and functions, no I/O: the unit tests drive it directly.

use std::collections::{BTreeMap, BTreeSet};

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

/// A control-plane endpoint, `host:port`: the host a DNS name (resolved
/// on each new probe connection and dial) or an IP address.
pub use slate_common::hostport::{HostPort as Target, HostPortError as TargetError};

/// What the last probe or dial said about an endpoint.
///
/// The rule: `ready` (TLS and `GET /readyz` → 200) and `up` (TCP connects
/// but the probe got no verdict: no TLS, no HTTP answer in time, or 401/403
/// because anonymous `/readyz` is off) are healthy; `ready` ranks first.
/// `notready` (the API server said so: any other status) and `down` (TCP
/// connect refused, timed out or the name did not resolve; or a client
/// dial just failed) are not, and get new connections only when every
/// healthy endpoint failed too. `unknown` is an endpoint not probed yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    #[default]
    Unknown,
    Ready,
    Up,
    NotReady,
    Down,
}

impl Health {
    pub fn healthy(self) -> bool {
        matches!(self, Health::Ready | Health::Up)
    }

    /// Lower is tried first. An endpoint not probed yet comes after the
    /// healthy ones but before those known to be bad.
    fn rank(self) -> u8 {
        match self {
            Health::Ready => 0,
            Health::Up => 1,
            Health::Unknown => 2,
            Health::NotReady => 3,
            Health::Down => 4,
        }
    }
}

/// Weight of a new latency sample in the smoothed latency: enough to
/// follow a real change within a few probes (a few seconds at most), not
/// so much that one slow answer reorders the endpoints.
const SMOOTHING: f64 = 0.3;

/// Endpoints whose latency is within this of the best one form the
/// preferred tier and share new connections: two API servers 0.3 and
/// 0.5 ms away are equally good, and sending everything to one of them
/// would only concentrate the load. 5 ms, not less: a busy node's own
/// scheduling adds milliseconds of noise to the probes, and an endpoint
/// must not drop out of the tier for that.
const TIER_MARGIN_MIN: Duration = Duration::from_millis(5);
/// … or within half the best latency, for endpoints further away.
const TIER_MARGIN_FACTOR: f64 = 0.5;

/// One endpoint's state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointState {
    /// Who named it (`config`, a discovery module, …).
    pub sources: BTreeSet<String>,
    pub health: Health,
    /// The address last connected to (a DNS name's current address).
    pub address: Option<SocketAddr>,
    /// Smoothed probe latency: the `/readyz` round trip for `ready` and
    /// `notready`, the TCP connect time for `up`.
    pub latency: Option<Duration>,
    pub error: Option<String>,
    /// Client connections forwarded to it now, and since it was added.
    pub active: usize,
    pub connections: u64,
    /// Client dials that failed (each marked it `down` at once).
    pub failed_dials: u64,
}

impl EndpointState {
    /// Takes a probe's verdict. The latency of `ready` and of `up` measure
    /// different things (a request versus a TCP connect), so a switch
    /// between the two starts the average afresh.
    pub fn probed(&mut self, health: Health, latency: Option<Duration>, error: Option<String>) {
        let measures_request = |h: Health| matches!(h, Health::Ready | Health::NotReady);
        if measures_request(health) != measures_request(self.health) {
            self.latency = None;
        }
        if let Some(sample) = latency {
            self.latency = Some(match self.latency {
                None => sample,
                Some(old) => old.mul_f64(1.0 - SMOOTHING) + sample.mul_f64(SMOOTHING),
            });
        }
        self.health = health;
        self.error = error;
    }

    /// A client dial failed: no new connection should try it first until a
    /// probe says it is back.
    pub fn dial_failed(&mut self, error: String) {
        self.health = Health::Down;
        self.failed_dials += 1;
        self.error = Some(error);
    }
}

/// The endpoints by target, with who contributed them.
#[derive(Debug, Default)]
pub struct Endpoints {
    by_source: BTreeMap<String, BTreeSet<Target>>,
    states: BTreeMap<Target, EndpointState>,
    /// Turns the preferred tier round, one step per connection.
    turn: usize,
}

impl Endpoints {
    /// Replaces what `source` contributes. Returns the targets that are new
    /// and those no source names any more.
    pub fn set(&mut self, source: &str, targets: Vec<Target>) -> (Vec<Target>, Vec<Target>) {
        let new: BTreeSet<Target> = targets.into_iter().collect();
        if new.is_empty() {
            self.by_source.remove(source);
        } else {
            self.by_source.insert(source.to_owned(), new);
        }
        let wanted: BTreeMap<&Target, BTreeSet<String>> =
            self.by_source
                .iter()
                .fold(BTreeMap::new(), |mut acc, (src, targets)| {
                    for t in targets {
                        acc.entry(t)
                            .or_insert_with(BTreeSet::new)
                            .insert(src.clone());
                    }
                    acc
                });
        let removed: Vec<Target> = self
            .states
            .keys()
            .filter(|t| !wanted.contains_key(t))
            .cloned()
            .collect();
        for t in &removed {
            self.states.remove(t);
        }
        let mut added = Vec::new();
        for (t, sources) in wanted {
            let state = self.states.entry(t.clone()).or_insert_with(|| {
                added.push(t.clone());
                EndpointState::default()
            });
            state.sources = sources;
        }
        (added, removed)
    }

    pub fn get_mut(&mut self, target: &Target) -> Option<&mut EndpointState> {
        self.states.get_mut(target)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Target, &EndpointState)> {
        self.states.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// The order in which the next connection tries the endpoints, with
    /// their last known address; each call turns the preferred tier.
    pub fn next_order(&mut self) -> Vec<(Target, Option<SocketAddr>)> {
        let order = order(&self.states, self.turn);
        self.turn = self.turn.wrapping_add(1);
        order
            .into_iter()
            .map(|t| {
                let addr = self.states.get(&t).and_then(|s| s.address);
                (t, addr)
            })
            .collect()
    }

    /// The endpoint new connections go to first now (for the status).
    pub fn preferred(&self) -> Option<Target> {
        order(&self.states, self.turn).into_iter().next()
    }
}

/// Best first: by health rank, then smoothed latency (unmeasured last).
/// The preferred tier — the endpoints of the best rank whose latency is
/// within the margin of the best — comes first, rotated by `turn`; then
/// everything else in that order, down endpoints last.
pub fn order(states: &BTreeMap<Target, EndpointState>, turn: usize) -> Vec<Target> {
    let mut all: Vec<(&Target, &EndpointState)> = states.iter().collect();
    all.sort_by_key(|(t, s)| (s.health.rank(), s.latency.unwrap_or(Duration::MAX), *t));
    let Some((_, best)) = all.first() else {
        return Vec::new();
    };
    let (rank, best_latency) = (best.health.rank(), best.latency);
    let tier_len = if best.health == Health::Down || best.health == Health::NotReady {
        // Nothing is good: try them in order, no spreading.
        1
    } else {
        all.iter()
            .take_while(|(_, s)| {
                s.health.rank() == rank
                    && match (best_latency, s.latency) {
                        (Some(b), Some(l)) => {
                            l <= b + TIER_MARGIN_MIN.max(b.mul_f64(TIER_MARGIN_FACTOR))
                        }
                        (None, None) => true,
                        _ => false,
                    }
            })
            .count()
    };
    let mut out: Vec<Target> = all.iter().map(|(t, _)| (*t).clone()).collect();
    out[..tier_len].rotate_left(turn % tier_len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Target {
        Target::parse(s).unwrap()
    }

    fn state(health: Health, ms: Option<u64>) -> EndpointState {
        EndpointState {
            health,
            latency: ms.map(Duration::from_millis),
            ..Default::default()
        }
    }

    #[test]
    fn healthy_lowest_latency_first_then_the_rest() {
        let states = BTreeMap::from([
            (t("10.0.0.1:6443"), state(Health::Down, Some(1))),
            (t("10.0.0.2:6443"), state(Health::Ready, Some(30))),
            (t("10.0.0.3:6443"), state(Health::Up, Some(1))),
            (t("10.0.0.4:6443"), state(Health::Ready, Some(5))),
            (t("10.0.0.5:6443"), state(Health::NotReady, Some(1))),
            (t("10.0.0.6:6443"), state(Health::Unknown, None)),
        ]);
        let want: Vec<Target> = ["4", "2", "3", "6", "5", "1"]
            .iter()
            .map(|n| t(&format!("10.0.0.{n}:6443")))
            .collect();
        // A tier of one: every turn gives the same order.
        assert_eq!(order(&states, 0), want);
        assert_eq!(order(&states, 7), want);
    }

    #[test]
    fn close_latencies_share_the_preferred_tier() {
        let states = BTreeMap::from([
            (t("10.0.0.1:6443"), state(Health::Ready, Some(1))),
            (t("10.0.0.2:6443"), state(Health::Ready, Some(2))),
            (t("10.0.0.3:6443"), state(Health::Ready, Some(20))),
        ]);
        let firsts: Vec<Target> = (0..4).map(|turn| order(&states, turn)[0].clone()).collect();
        assert_eq!(
            firsts,
            [
                t("10.0.0.1:6443"),
                t("10.0.0.2:6443"),
                t("10.0.0.1:6443"),
                t("10.0.0.2:6443")
            ]
        );
        for turn in 0..4 {
            assert_eq!(order(&states, turn)[2], t("10.0.0.3:6443"));
        }
        // 100 ms and 140 ms are the same distance class; 160 ms is not.
        let far = BTreeMap::from([
            (t("10.0.0.1:6443"), state(Health::Ready, Some(100))),
            (t("10.0.0.2:6443"), state(Health::Ready, Some(140))),
            (t("10.0.0.3:6443"), state(Health::Ready, Some(160))),
        ]);
        assert_eq!(order(&far, 1)[0], t("10.0.0.2:6443"));
        assert_eq!(order(&far, 2)[0], t("10.0.0.1:6443"));
    }

    #[test]
    fn nothing_probed_yet_spreads_and_all_down_still_tries_in_order() {
        let fresh = BTreeMap::from([
            (t("10.0.0.1:6443"), state(Health::Unknown, None)),
            (t("10.0.0.2:6443"), state(Health::Unknown, None)),
        ]);
        assert_ne!(order(&fresh, 0)[0], order(&fresh, 1)[0]);
        let down = BTreeMap::from([
            (t("10.0.0.1:6443"), state(Health::Down, Some(9))),
            (t("10.0.0.2:6443"), state(Health::Down, Some(3))),
        ]);
        assert_eq!(order(&down, 1), [t("10.0.0.2:6443"), t("10.0.0.1:6443")]);
        assert!(order(&BTreeMap::new(), 0).is_empty());
    }

    #[test]
    fn latency_is_smoothed_and_restarts_when_the_measure_changes() {
        let mut s = EndpointState::default();
        s.probed(Health::Ready, Some(Duration::from_millis(10)), None);
        s.probed(Health::Ready, Some(Duration::from_millis(20)), None);
        assert_eq!(s.latency, Some(Duration::from_millis(13)));
        // One slow answer does not undo the ranking at once.
        s.probed(Health::Ready, Some(Duration::from_millis(100)), None);
        assert!(s.latency.unwrap() < Duration::from_millis(40));
        s.probed(
            Health::Up,
            Some(Duration::from_millis(1)),
            Some("no TLS".into()),
        );
        assert_eq!(s.latency, Some(Duration::from_millis(1)));
        s.dial_failed("refused".into());
        assert_eq!((s.health, s.failed_dials), (Health::Down, 1));
        assert!(!s.health.healthy());
    }

    #[test]
    fn sources_add_and_remove_endpoints() {
        let mut e = Endpoints::default();
        let (added, removed) = e.set("config", vec![t("10.0.0.1:6443")]);
        assert_eq!((added.len(), removed.len()), (1, 0));
        let (added, removed) = e.set("mesh", vec![t("10.0.0.1:6443"), t("10.0.0.2:6443")]);
        assert_eq!((added, removed), (vec![t("10.0.0.2:6443")], vec![]));
        let sources: Vec<_> = e.iter().next().unwrap().1.sources.iter().cloned().collect();
        assert_eq!(sources, ["config", "mesh"]);
        // Still named by mesh: stays.
        let (_, removed) = e.set("config", vec![]);
        assert!(removed.is_empty());
        let (_, removed) = e.set("mesh", vec![]);
        assert_eq!(removed.len(), 2);
        assert!(e.is_empty());
    }
}
