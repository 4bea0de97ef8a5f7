//! Logging that a flood cannot turn into a flood of log lines: at most one
//! line per key (a client address, an endpoint) per interval, with the
//! number of lines held back since.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Keys remembered at most; beyond, expired ones are dropped and, if none
/// expired, new keys share one entry (so memory stays bounded too).
const MAX_KEYS: usize = 1024;
const OVERFLOW_KEY: &str = "(other sources)";

#[derive(Debug)]
pub struct LogLimiter {
    every: Duration,
    /// Key → when it last logged, and how many lines it held back since.
    last: HashMap<String, (Instant, u64)>,
}

impl LogLimiter {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: HashMap::new(),
        }
    }

    /// `Some(held_back)` when a line about `key` may be logged now (and how
    /// many were held back before it), `None` when it must be dropped.
    pub fn allow(&mut self, key: &str, now: Instant) -> Option<u64> {
        let every = self.every;
        if !self.last.contains_key(key) && self.last.len() >= MAX_KEYS {
            self.last
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < every);
        }
        let key = if self.last.contains_key(key) || self.last.len() < MAX_KEYS {
            key
        } else {
            OVERFLOW_KEY
        };
        match self.last.get_mut(key) {
            Some((at, held)) if now.saturating_duration_since(*at) < every => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                *at = now;
                Some(std::mem::take(held))
            }
            None => {
                self.last.insert(key.to_owned(), (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_key_per_interval_with_the_count_held_back() {
        let mut l = LogLimiter::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(l.allow("10.0.0.1", t0), Some(0));
        assert_eq!(l.allow("10.0.0.1", t0 + Duration::from_secs(1)), None);
        assert_eq!(l.allow("10.0.0.1", t0 + Duration::from_secs(59)), None);
        // Another key is not held back by the first.
        assert_eq!(l.allow("10.0.0.2", t0 + Duration::from_secs(2)), Some(0));
        assert_eq!(l.allow("10.0.0.1", t0 + Duration::from_secs(60)), Some(2));
        assert_eq!(l.allow("10.0.0.1", t0 + Duration::from_secs(61)), None);
    }

    #[test]
    fn many_keys_stay_bounded() {
        let mut l = LogLimiter::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let allowed = (0..MAX_KEYS + 500)
            .filter(|i| l.allow(&format!("k{i}"), t0).is_some())
            .count();
        // The first MAX_KEYS log, the rest share one line.
        assert_eq!(allowed, MAX_KEYS + 1);
        assert!(l.last.len() <= MAX_KEYS + 1);
        // Once they expired, new keys get their own entries again.
        let later = t0 + Duration::from_secs(61);
        assert_eq!(l.allow("fresh", later), Some(0));
        assert!(l.last.len() <= 2);
    }
}
