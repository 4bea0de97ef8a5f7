//! Console logging for the daemons: one line per event, stamped with the
//! time since boot like the kernel's and init's lines, so a console capture
//! reads as one timeline.

use std::fmt;

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// Seconds since boot (CLOCK_BOOTTIME), formatted as `[    1.234567]`.
struct SinceBoot;

impl FormatTime for SinceBoot {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we own.
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
        write!(w, "[{:5}.{:06}]", ts.tv_sec, ts.tv_nsec / 1000)
    }
}

/// Installs the global subscriber: INFO and above to stderr (the console
/// under init), or the level named by `SLATE_LOG` (error|warn|info|debug|trace).
pub fn init() {
    let level = std::env::var("SLATE_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .with_timer(SinceBoot)
        .with_max_level(level)
        .init();
}
