//! A service's output: every line goes to a bounded in-memory ring (what
//! `slatectl logs` shows first), to followers (`-f`), and, when a log
//! directory is set, to `DIR/ID.log`, rotated to `ID.log.1` at a size cap
//! so a chatty service cannot fill /var.
//!
//! The file is append-only and never fsynced per line (a chatty service
//! would make every line a disk flush), so a power cut can leave a torn
//! last line or, on ext4, a tail of zeros. When the file is opened again
//! (the next boot, or machined restarted) it is cut back to its last whole
//! line, so the next line never glues onto half of one, and its last
//! lines fill the ring: `slatectl logs` shows what the service said
//! before the reboot, whole lines only.

use std::collections::VecDeque;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Lines kept in memory per service.
pub const RING_LINES: usize = 2000;
/// Longer lines are cut here (a binary blob on stdout must not take the
/// ring's memory).
pub const MAX_LINE: usize = 8192;
/// The log file is rotated beyond this size.
pub const FILE_MAX: u64 = 8 << 20;

struct Inner {
    ring: VecDeque<String>,
    file: Option<(PathBuf, std::fs::File, u64)>,
}

/// Shared by the output pumps (writers) and the API (readers).
#[derive(Clone)]
pub struct LogBuffer {
    inner: Arc<Mutex<Inner>>,
    follow: tokio::sync::broadcast::Sender<String>,
}

impl LogBuffer {
    /// `file`: where to keep the log on disk, if anywhere.
    pub fn new(file: Option<PathBuf>) -> Self {
        let mut ring = VecDeque::with_capacity(64);
        let file = file.and_then(|path| {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let (f, size, earlier) = open_whole_lines(&path)
                .map_err(|e| {
                    tracing::warn!("{}: {e}; keeping the log in memory only", path.display())
                })
                .ok()?;
            ring.extend(earlier);
            Some((path, f, size))
        });
        Self {
            inner: Arc::new(Mutex::new(Inner { ring, file })),
            follow: tokio::sync::broadcast::channel(256).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds one line (without its newline).
    pub fn push(&self, line: &str) {
        let mut line = line.to_owned();
        if line.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push_str(" …");
        }
        {
            let mut inner = self.lock();
            if inner.ring.len() == RING_LINES {
                inner.ring.pop_front();
            }
            inner.ring.push_back(line.clone());
            if let Some((path, file, size)) = inner.file.as_mut() {
                if *size > FILE_MAX {
                    let rotated = path.with_extension("log.1");
                    if std::fs::rename(&*path, &rotated).is_ok()
                        && let Ok(f) = std::fs::File::options()
                            .create(true)
                            .append(true)
                            .open(&*path)
                    {
                        *file = f;
                        *size = 0;
                    }
                }
                // One write: a line and its newline never part.
                let mut record = String::with_capacity(line.len() + 1);
                record.push_str(&line);
                record.push('\n');
                if file.write_all(record.as_bytes()).is_ok() {
                    *size += record.len() as u64;
                }
            }
            // Under the lock, so a reader's tail and its receiver never
            // both get this line. No follower is fine.
            let _ = self.follow.send(line);
        }
    }

    /// The last `n` lines (all kept with `None`), and a receiver of the
    /// lines after them: taken together, so no line is missed or repeated.
    pub fn tail_and_follow(
        &self,
        n: Option<usize>,
    ) -> (Vec<String>, tokio::sync::broadcast::Receiver<String>) {
        let inner = self.lock();
        let rx = self.follow.subscribe();
        let skip = n.map_or(0, |n| inner.ring.len().saturating_sub(n));
        (inner.ring.iter().skip(skip).cloned().collect(), rx)
    }
}

/// How much of a log file's end is read back at open: the ring's worth of
/// typical lines; a line is at most [`MAX_LINE`], so a whole one is in it.
const RECOVER_BYTES: u64 = 256 << 10;

/// Opens `path` for appending, first cut back to its last whole line
/// (dropping a torn line or a tail of zeros a power cut left); returns the
/// file, its size and its last whole lines (at most [`RING_LINES`]).
fn open_whole_lines(path: &Path) -> std::io::Result<(std::fs::File, u64, Vec<String>)> {
    let mut f = std::fs::File::options()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let len = f.metadata()?.len();
    // Back from the end, a window at a time, to the last newline:
    // everything after it is a torn line (or zeros). Usually the first
    // window has one; a long tail of zeros takes a few.
    let mut end = len;
    let (start, window) = loop {
        let start = end.saturating_sub(RECOVER_BYTES);
        f.seek(SeekFrom::Start(start))?;
        let mut window = Vec::with_capacity((end - start) as usize);
        std::io::Read::by_ref(&mut f)
            .take(end - start)
            .read_to_end(&mut window)?;
        if let Some(i) = window.iter().rposition(|b| *b == b'\n') {
            window.truncate(i + 1);
            break (start, window);
        }
        if start == 0 {
            break (0, Vec::new());
        }
        end = start;
    };
    let size = start + window.len() as u64;
    if size < len {
        f.set_len(size)?;
        tracing::warn!(
            "{}: dropped {} bytes of a torn last line (power lost while it was written)",
            path.display(),
            len - size
        );
    }
    let mut lines: Vec<String> = window
        .split(|b| *b == b'\n')
        // The window's first piece may start mid-line.
        .skip(usize::from(start > 0))
        .filter(|l| !l.is_empty() && !l.contains(&0))
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    let skip = lines.len().saturating_sub(RING_LINES);
    lines.drain(..skip);
    Ok((f, size, lines))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_is_bounded_and_tail_counts_from_the_end() {
        let log = LogBuffer::new(None);
        for i in 0..RING_LINES + 10 {
            log.push(&format!("line {i}"));
        }
        let (all, _) = log.tail_and_follow(None);
        assert_eq!(all.len(), RING_LINES);
        assert_eq!(all[0], "line 10");
        let (last, _) = log.tail_and_follow(Some(2));
        assert_eq!(
            last,
            vec![
                format!("line {}", RING_LINES + 8),
                format!("line {}", RING_LINES + 9)
            ]
        );
    }

    #[test]
    fn long_lines_are_cut_and_followers_get_new_lines() {
        let log = LogBuffer::new(None);
        let (_, mut rx) = log.tail_and_follow(Some(0));
        log.push(&"é".repeat(MAX_LINE));
        let got = rx.try_recv().unwrap();
        assert!(got.len() <= MAX_LINE + 4 && got.ends_with(" …"));
    }

    #[test]
    fn a_torn_last_line_is_cut_and_the_whole_ones_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        // A power cut mid-line, and one that left zeros after a line.
        for (before, after) in [
            (&b"one\ntwo\nthr"[..], "one\ntwo\nfour\n"),
            (&b"one\ntwo\n\0\0\0\0"[..], "one\ntwo\nfour\n"),
            (&b"\0\0\0"[..], "four\n"),
            (&b""[..], "four\n"),
        ] {
            std::fs::write(&path, before).unwrap();
            let log = LogBuffer::new(Some(path.clone()));
            let (ring, _) = log.tail_and_follow(None);
            let whole: Vec<&str> = after.lines().filter(|l| *l != "four").collect();
            assert_eq!(ring, whole, "{before:?}");
            log.push("four");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), after, "{before:?}");
        }
    }

    #[test]
    fn a_tail_of_zeros_longer_than_a_window_is_cut_at_the_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        let mut before = b"one\ntwo\n".to_vec();
        before.resize(before.len() + 3 * RECOVER_BYTES as usize + 5, 0);
        std::fs::write(&path, &before).unwrap();
        let log = LogBuffer::new(Some(path.clone()));
        let (ring, _) = log.tail_and_follow(None);
        assert_eq!(ring, ["one", "two"]);
        log.push("three");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\nthree\n");
    }

    #[test]
    fn only_the_end_of_a_long_file_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        let text: String = (0..RING_LINES * 3)
            .map(|i| format!("line {i} {}\n", "x".repeat(100)))
            .collect();
        std::fs::write(&path, &text).unwrap();
        let log = LogBuffer::new(Some(path.clone()));
        let (ring, _) = log.tail_and_follow(None);
        assert!(!ring.is_empty() && ring.len() <= RING_LINES);
        // Whole lines, ending with the file's last.
        assert!(
            ring.iter()
                .all(|l| l.starts_with("line ") && l.ends_with('x'))
        );
        assert_eq!(ring.last().unwrap(), text.lines().last().unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn the_file_rotates_at_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        let log = LogBuffer::new(Some(path.clone()));
        let line = "x".repeat(4096);
        for _ in 0..(FILE_MAX / 4096 + 10) {
            log.push(&line);
        }
        assert!(dir.path().join("svc.log.1").exists());
        assert!(std::fs::metadata(&path).unwrap().len() < FILE_MAX);
    }
}
