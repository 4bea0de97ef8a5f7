//! Logging that a flood cannot turn into a flood of log lines: at most one
//! line per key (a source address, an endpoint, a kind of fault) per
//! interval, with the number of lines held back since. The balancer, the
//! mesh and the discovery service all log what strangers send through it.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Keys remembered at most unless [`LogLimiter::with_capacity`] says
/// otherwise.
pub const DEFAULT_KEYS: usize = 1024;

/// Decides which lines about which keys are logged.
#[derive(Debug)]
pub struct LogLimiter<K = String> {
    every: Duration,
    max_keys: usize,
    /// Key → when it last logged, and how many lines it held back since.
    last: HashMap<K, (Instant, u64)>,
}

impl<K: Hash + Eq> LogLimiter<K> {
    /// One line per key per `every`, remembering [`DEFAULT_KEYS`] keys.
    pub fn new(every: Duration) -> Self {
        Self::with_capacity(every, DEFAULT_KEYS)
    }

    /// One line per key per `every`, remembering at most `max_keys` keys:
    /// beyond that, expired keys are forgotten, and if none expired a new
    /// key is held back until one does (a flood from many sources is held
    /// back as a whole, and memory stays bounded).
    pub fn with_capacity(every: Duration, max_keys: usize) -> Self {
        Self {
            every,
            max_keys: max_keys.max(1),
            last: HashMap::new(),
        }
    }

    /// `Some(held_back)` when a line about `key` may be logged now (and how
    /// many were held back before it), `None` when it must be dropped.
    pub fn allow<Q>(&mut self, key: &Q, now: Instant) -> Option<u64>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let every = self.every;
        if let Some((at, held)) = self.last.get_mut(key) {
            if now.saturating_duration_since(*at) < every {
                *held += 1;
                return None;
            }
            *at = now;
            return Some(std::mem::take(held));
        }
        if self.last.len() >= self.max_keys {
            self.last
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < every);
            if self.last.len() >= self.max_keys {
                return None;
            }
        }
        self.last.insert(key.to_owned(), (now, 0));
        Some(0)
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

/// ` (and N more held back)` for a count from [`LogLimiter::allow`], empty
/// for none: the tail of the line that is logged.
pub fn held_back(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" (and {n} more held back)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn once_per_key_per_interval_with_the_count_held_back() {
        let mut l = LogLimiter::<String>::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(l.allow("10.0.0.1", t0), Some(0));
        assert_eq!(l.allow("10.0.0.1", t0 + Duration::from_secs(1)), None);
        assert_eq!(l.allow("10.0.0.1", t0 + Duration::from_secs(59)), None);
        // Another key is not held back by the first.
        assert_eq!(l.allow("10.0.0.2", t0 + Duration::from_secs(2)), Some(0));
        assert_eq!(l.allow("10.0.0.1", t0 + Duration::from_secs(60)), Some(2));
        assert_eq!(l.allow("10.0.0.1", t0 + Duration::from_secs(61)), None);
        assert_eq!(held_back(2), " (and 2 more held back)");
        assert_eq!(held_back(0), "");
    }

    #[test]
    fn many_keys_stay_bounded() {
        let mut l = LogLimiter::<IpAddr>::with_capacity(Duration::from_secs(60), 100);
        let t0 = Instant::now();
        let ip = |i: u32| IpAddr::from(i.to_be_bytes());
        let allowed = (0..600).filter(|i| l.allow(&ip(*i), t0).is_some()).count();
        // The first 100 log, the flood beyond is held back as a whole.
        assert_eq!(allowed, 100);
        assert_eq!(l.len(), 100);
        // Once they expired, new keys get their own entries again.
        let later = t0 + Duration::from_secs(61);
        assert_eq!(l.allow(&ip(1000), later), Some(0));
        assert_eq!(l.len(), 1);
    }
}
