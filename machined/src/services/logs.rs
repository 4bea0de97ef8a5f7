//! A service's output: every line goes to a bounded in-memory ring (what
//! `slatectl logs` shows first), to followers (`-f`), and, when a log
//! directory is set, to `DIR/ID.log`, rotated to `ID.log.1` at a size cap
//! so a chatty service cannot fill /var.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::PathBuf;
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
        let file = file.and_then(|path| {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let f = std::fs::File::options()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| {
                    tracing::warn!("{}: {e}; keeping the log in memory only", path.display())
                })
                .ok()?;
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            Some((path, f, size))
        });
        Self {
            inner: Arc::new(Mutex::new(Inner {
                ring: VecDeque::with_capacity(64),
                file,
            })),
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
                if writeln!(file, "{line}").is_ok() {
                    *size += line.len() as u64 + 1;
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
