//! Logging what strangers send without letting them flood the log: at most
//! one line per source per window, with a count of what was held back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Decides which events from which sources get a log line.
#[derive(Debug)]
pub struct RateLimitedLog {
    window: Duration,
    max_sources: usize,
    sources: Mutex<HashMap<IpAddr, Source>>,
}

#[derive(Debug, Clone, Copy)]
struct Source {
    logged_at: Instant,
    held_back: u64,
}

impl RateLimitedLog {
    /// One line per source per `window`, remembering at most `max_sources`
    /// sources (beyond that, new sources are not logged until old ones age
    /// out: a flood from many addresses is itself held back).
    pub fn new(window: Duration, max_sources: usize) -> Self {
        Self {
            window,
            max_sources,
            sources: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(n)` when an event from `source` at `now` should be logged, `n`
    /// being how many events from it were held back since its last line;
    /// `None` to hold this one back.
    pub fn check(&self, source: IpAddr, now: Instant) -> Option<u64> {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = sources.get_mut(&source) {
            if now.saturating_duration_since(s.logged_at) < self.window {
                s.held_back += 1;
                return None;
            }
            let held_back = s.held_back;
            *s = Source {
                logged_at: now,
                held_back: 0,
            };
            return Some(held_back);
        }
        if sources.len() >= self.max_sources {
            let window = self.window;
            sources.retain(|_, s| now.saturating_duration_since(s.logged_at) < window);
            if sources.len() >= self.max_sources {
                return None;
            }
        }
        sources.insert(
            source,
            Source {
                logged_at: now,
                held_back: 0,
            },
        );
        Some(0)
    }

    /// Logs `what` at warn level if [`Self::check`] allows it.
    pub fn warn(&self, source: IpAddr, what: std::fmt::Arguments<'_>) {
        match self.check(source, Instant::now()) {
            Some(0) => tracing::warn!("{source}: {what}"),
            Some(n) => tracing::warn!("{source}: {what} (and {n} more held back)"),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_source_per_window_with_a_count() {
        let log = RateLimitedLog::new(Duration::from_secs(60), 10);
        let t = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(log.check(a, t), Some(0));
        assert_eq!(log.check(a, t + Duration::from_secs(1)), None);
        assert_eq!(log.check(a, t + Duration::from_secs(59)), None);
        assert_eq!(log.check(b, t + Duration::from_secs(59)), Some(0));
        assert_eq!(log.check(a, t + Duration::from_secs(60)), Some(2));
        assert_eq!(log.check(a, t + Duration::from_secs(61)), None);
    }

    #[test]
    fn the_memory_of_sources_is_bounded() {
        let log = RateLimitedLog::new(Duration::from_secs(60), 2);
        let t = Instant::now();
        let ip = |i: u8| IpAddr::from([192, 0, 2, i]);
        assert_eq!(log.check(ip(1), t), Some(0));
        assert_eq!(log.check(ip(2), t), Some(0));
        assert_eq!(log.check(ip(3), t), None, "full of recent sources");
        assert_eq!(log.check(ip(3), t + Duration::from_secs(60)), Some(0));
        assert_eq!(log.sources.lock().unwrap().len(), 1);
    }
}
