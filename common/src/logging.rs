//! Console logging for the daemons: one line per event, stamped with the
//! time since boot like the kernel's and init's lines, so a console capture
//! reads as one timeline.

//!
//! Lines go to the console through a bounded queue and a writer thread of
//! their own ([`Console`]): a serial console at 115200 baud writes ~11 KB/s,
//! and a daemon must not stall its runtime on it (a flood of refused TLS
//! clients, say). When the queue is full, new lines are dropped and
//! counted, and the count is printed once the console catches up.
//! `tracing-appender` does the same, but brings thiserror 1 and
//! crossbeam-channel into the size-budgeted image; a std channel is enough.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// Lines that may wait for the console before new ones are dropped.
pub const QUEUE_LINES: usize = 1024;

/// The console as the log writer: a queue of whole lines and the thread
/// that writes them to the sink.
#[derive(Clone)]
pub struct Console {
    tx: SyncSender<Vec<u8>>,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    /// Lines dropped since the last notice.
    dropped: AtomicU64,
    /// Lines queued and not yet written.
    pending: AtomicUsize,
}

impl Console {
    /// Starts the writer thread for `sink` with room for `capacity` lines.
    pub fn new(mut sink: impl Write + Send + 'static, capacity: usize) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(capacity);
        let counts = Arc::new(Counts::default());
        let writer_counts = Arc::clone(&counts);
        std::thread::Builder::new()
            .name("console".into())
            .spawn(move || {
                for line in rx {
                    let dropped = writer_counts.dropped.swap(0, Ordering::Relaxed);
                    if dropped > 0 {
                        let _ = writeln!(
                            sink,
                            "{dropped} log lines dropped: the console was too slow"
                        );
                    }
                    let _ = sink.write_all(&line);
                    writer_counts.pending.fetch_sub(1, Ordering::Release);
                }
            })?;
        Ok(Self { tx, counts })
    }

    /// Lines dropped since the writer last said so.
    pub fn dropped(&self) -> u64 {
        self.counts.dropped.load(Ordering::Relaxed)
    }

    /// Waits up to `timeout` for the queued lines to be written: before a
    /// daemon exits, so its last words reach the console.
    pub fn flush(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.counts.pending.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn queue(&self, line: Vec<u8>) {
        self.counts.pending.fetch_add(1, Ordering::Release);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(line) {
            self.counts.pending.fetch_sub(1, Ordering::Release);
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One event's line, queued whole when the formatter is done with it.
pub struct Line<'a> {
    buf: Vec<u8>,
    console: &'a Console,
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.console.queue(std::mem::take(&mut self.buf));
        }
    }
}

impl<'a> MakeWriter<'a> for Console {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line {
            buf: Vec::new(),
            console: self,
        }
    }
}

/// The console [`init`] installed, for [`flush`].
static CONSOLE: OnceLock<Console> = OnceLock::new();

/// Waits (up to 1 s) for the log lines still queued: call before
/// `std::process::exit`.
pub fn flush() {
    if let Some(console) = CONSOLE.get() {
        console.flush(Duration::from_secs(1));
    }
}

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
    let builder = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_target(false)
        .with_timer(SinceBoot)
        .with_max_level(level);
    // Without a writer thread (none can start), lines block as before.
    match Console::new(std::io::stderr(), QUEUE_LINES) {
        Ok(console) => builder
            .with_writer(CONSOLE.get_or_init(|| console).clone())
            .init(),
        Err(_) => builder.with_writer(std::io::stderr).init(),
    }
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
    use super::*;

    /// A console that takes one line and then hangs until told to go on:
    /// a stalled serial port.
    struct Stalled {
        go: std::sync::mpsc::Receiver<()>,
        out: Arc<std::sync::Mutex<Vec<u8>>>,
        first: bool,
    }

    impl Write for Stalled {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if !self.first {
                let _ = self.go.recv();
            }
            self.first = false;
            self.out.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_console_drops_lines_instead_of_blocking_and_says_so() {
        let (go, wait) = std::sync::mpsc::channel();
        let out = Arc::new(std::sync::Mutex::new(Vec::new()));
        let console = Console::new(
            Stalled {
                go: wait,
                out: Arc::clone(&out),
                first: true,
            },
            8,
        )
        .unwrap();
        let started = Instant::now();
        for i in 0..10_000 {
            let mut line = console.make_writer();
            writeln!(line, "refused TLS client {i}").unwrap();
        }
        // Ten thousand lines against a console that writes none: the
        // caller never waited on it.
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(go);
        console.flush(Duration::from_secs(5));
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        assert!(text.contains("refused TLS client 0\n"), "{text}");
        // What reached the console and what it was told was dropped add
        // up to every line; at most the queue and the line in hand got
        // through.
        let written = text.matches("refused TLS client").count();
        let told: u64 = text
            .lines()
            .filter_map(|l| l.strip_suffix(" log lines dropped: the console was too slow"))
            .map(|n| n.parse::<u64>().unwrap())
            .sum();
        assert!(written <= 8 + 2, "{written} lines written");
        assert_eq!(written as u64 + told + console.dropped(), 10_000, "{text}");
    }

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
