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
/// under init), or the level named by `SLATE_LOG` or, since a node has no
/// shell to set variables in, by `slate.log=LEVEL` on the kernel command
/// line (error|warn|info|debug|trace).
pub fn init() {
    let cmdline = std::fs::read_to_string(crate::constants::PROC_CMDLINE).unwrap_or_default();
    let level = std::env::var("SLATE_LOG")
        .ok()
        .or_else(|| level_from_cmdline(&cmdline))
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

fn level_from_cmdline(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .rev()
        .find_map(|arg| arg.strip_prefix("slate.log="))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    #[test]
    fn level_from_the_kernel_command_line() {
        assert_eq!(
            super::level_from_cmdline("console=ttyS0 slate.log=debug quiet").as_deref(),
            Some("debug")
        );
        assert_eq!(
            super::level_from_cmdline("slate.log=warn slate.log=trace").as_deref(),
            Some("trace")
        );
        assert_eq!(super::level_from_cmdline("console=ttyS0"), None);
    }
}
