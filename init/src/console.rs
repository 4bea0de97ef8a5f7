//! Console output in the kernel's format: `[    1.234567] init: message`.
//!
//! Each line goes to fd 2 with a single `write(2)`, so lines from init and
//! from the daemons (which share `/dev/console`) interleave whole, not
//! character by character. There is no logging framework: PID 1 must not
//! depend on anything that could fail to initialise.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use nix::time::{ClockId, clock_gettime};

static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Log a line on the console.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::console::write_line(&::std::format!($($arg)*))
    };
}

/// Log a line only when `slate.debug` is on the kernel command line.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::console::verbose() {
            $crate::console::write_line(&::std::format!($($arg)*))
        }
    };
}

/// Turn debug lines on or off (from `slate.debug`).
pub fn set_verbose(on: bool) {
    VERBOSE.store(on, Ordering::Relaxed);
}

pub fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

/// Time since boot, on the clock the kernel's printk timestamps roughly
/// follow (CLOCK_MONOTONIC does not count suspend, like printk's).
pub fn uptime() -> Duration {
    match clock_gettime(ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => Duration::new(
            ts.tv_sec().max(0) as u64,
            ts.tv_nsec().clamp(0, 999_999_999) as u32,
        ),
        Err(_) => Duration::ZERO,
    }
}

/// One console line, newline included. Embedded newlines become `; ` so a
/// message stays one line with one timestamp.
pub fn format_line(at: Duration, msg: &str) -> String {
    let msg = msg.trim_end().replace('\n', "; ");
    format!(
        "[{:5}.{:06}] init: {}\n",
        at.as_secs(),
        at.subsec_micros(),
        msg
    )
}

/// Write one line to fd 2. Errors are ignored: there is nowhere else to
/// report them.
pub fn write_line(msg: &str) {
    let line = format_line(uptime(), msg);
    write_all(stderr(), line.as_bytes());
}

fn stderr() -> BorrowedFd<'static> {
    // SAFETY: fd 2 is open for the whole life of init (the kernel opens it
    // on /dev/console and stage 1 only ever replaces it with dup2). If it
    // were closed, write(2) would fail with EBADF, which we ignore.
    unsafe { BorrowedFd::borrow_raw(2) }
}

fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(0) => return,
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) => continue,
            Err(_) => return,
        }
    }
}

/// Point fds 0, 1 and 2 at the console device (after devtmpfs is mounted:
/// the node in the initramfs is hidden by it).
pub fn reopen(console: &Path) -> Result<(), Errno> {
    let fd = open(
        console,
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    nix::unistd::dup2_stdin(fd.as_fd())?;
    nix::unistd::dup2_stdout(fd.as_fd())?;
    nix::unistd::dup2_stderr(fd.as_fd())?;
    Ok(())
}

/// Write panics to the console instead of std's default (which may
/// allocate a backtrace and writes in pieces).
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        write_line(&format!("BUG: {info}"));
    }));
}

pub use slate_common::error::chain;

/// A short human duration: `250ms`, `2s`, `1.5s`.
pub struct Short(pub Duration);

impl fmt::Display for Short {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms < 1000 {
            write!(f, "{ms}ms")
        } else if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{}.{}s", ms / 1000, (ms % 1000) / 100)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_look_like_the_kernels() {
        let cases = [
            (Duration::ZERO, "[    0.000000] init: hi\n"),
            (Duration::new(1, 234_567_890), "[    1.234567] init: hi\n"),
            (Duration::new(12345, 1_000), "[12345.000001] init: hi\n"),
            (Duration::new(123456, 0), "[123456.000000] init: hi\n"),
        ];
        for (at, want) in cases {
            assert_eq!(format_line(at, "hi"), want);
        }
    }

    #[test]
    fn a_message_stays_one_line() {
        assert_eq!(
            format_line(Duration::ZERO, "a\nb\n"),
            "[    0.000000] init: a; b\n"
        );
    }

    #[test]
    fn uptime_moves_forward() {
        let a = uptime();
        let b = uptime();
        assert!(b >= a);
        assert!(a > Duration::ZERO);
    }

    #[test]
    fn short_durations() {
        for (d, want) in [
            (Duration::from_millis(250), "250ms"),
            (Duration::from_secs(2), "2s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(30), "30s"),
        ] {
            assert_eq!(Short(d).to_string(), want);
        }
    }

    #[test]
    fn error_chains_are_joined() {
        #[derive(Debug, thiserror::Error)]
        #[error("mounting /x")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::from_raw_os_error(libc::EBUSY));
        assert!(chain(&e).starts_with("mounting /x: "));
    }
}
