//! The published machine config as a typed feed: machined writes it once
//! (atomically, by rename) to [`MACHINE_CONFIG_FILE`]; a daemon runs one
//! [`follow`] of it, which parses each new version once, and hands every
//! subsystem a `tokio::sync::watch` of the validated `Arc<MachineConfig>`
//! — or, through [`derive`], of the settings slice it needs, sent only
//! when that slice changed. No subsystem reads or polls the file.
//!
//! The hand-off stays a file, watched with inotify, rather than a Watch RPC
//! served by machined: the file outlives a restart of machined (a daemon
//! restarted by init has its config at once), it costs no socket or TLS on
//! the boot path, and it is what apid reads in maintenance mode too.
//!
//! [`MACHINE_CONFIG_FILE`]: slate_common::constants::MACHINE_CONFIG_FILE

use std::os::fd::{AsFd as _, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use crate::MachineConfig;

/// The latest valid published config; `None` while there is none (not yet
/// published, or withdrawn).
pub type Feed = watch::Receiver<Option<Arc<MachineConfig>>>;

/// When inotify cannot be had (no directory, out of watches), the file is
/// looked at this often instead.
const FALLBACK_POLL: Duration = Duration::from_secs(1);

/// Parses done by every feed of this process: the tests count them.
static PARSES: AtomicU64 = AtomicU64::new(0);

/// How many times this process has parsed a published config.
pub fn parses() -> u64 {
    PARSES.load(Ordering::Relaxed)
}

/// Follows `path` for ever on the current runtime: the returned feed has
/// the config as it is now and every later version. A version that does
/// not parse is logged and leaves the feed as it was (machined validated
/// what it wrote; a broken file is a bug, not a reason to drop the mesh).
pub fn follow(path: PathBuf) -> Feed {
    follow_parsed(path, |path, bytes| {
        PARSES.fetch_add(1, Ordering::Relaxed);
        let text = String::from_utf8_lossy(bytes);
        MachineConfig::from_json(&text, &path.display().to_string())
            .map(Arc::new)
            .map_err(|e| tracing::warn!("ignoring the published config: {e}"))
            .ok()
    })
}

/// Follows apid's view of the config (`constants::API_VIEW_FILE`) the
/// same way: parsed once per version, `None` while there is none.
pub fn follow_view(path: PathBuf) -> watch::Receiver<Option<Arc<crate::ApiView>>> {
    follow_parsed(path, |path, bytes| {
        let text = String::from_utf8_lossy(bytes);
        crate::ApiView::from_json(&text, &path.display().to_string())
            .map(Arc::new)
            .map_err(|e| tracing::warn!("ignoring the published API view: {e}"))
            .ok()
    })
}

/// Follows a small text file the same way (machined's maintenance reason
/// beside the config): its trimmed text, `None` while it does not exist.
pub fn follow_text(path: PathBuf) -> watch::Receiver<Option<String>> {
    follow_parsed(path, |_, bytes| {
        Some(String::from_utf8_lossy(bytes).trim().to_owned())
    })
}

/// The one file follower: `parse` runs once per new content; `None` from
/// it keeps the value as it was.
fn follow_parsed<T, P>(path: PathBuf, parse: P) -> watch::Receiver<Option<T>>
where
    T: Send + Sync + 'static,
    P: Fn(&Path, &[u8]) -> Option<T> + Send + 'static,
{
    let (tx, rx) = watch::channel(None);
    let mut last = None;
    load(&path, &mut last, &tx, &parse);
    tokio::spawn(async move {
        loop {
            match Watcher::new(&path) {
                Ok(mut w) => {
                    // Between the first read and the watch a version may
                    // have landed: read once more now that none is missed.
                    load(&path, &mut last, &tx, &parse);
                    while w.changed().await {
                        load(&path, &mut last, &tx, &parse);
                    }
                }
                Err(e) => {
                    tracing::debug!("watching {}: {e}; looking every second", path.display());
                    tokio::time::sleep(FALLBACK_POLL).await;
                    load(&path, &mut last, &tx, &parse);
                }
            }
            if tx.is_closed() {
                return;
            }
        }
    });
    rx
}

/// A slice of the config, derived once per change of the feed and sent
/// only when it differs from the one before: a subsystem wakes up for what
/// concerns it, not for every change of the config.
pub fn derive<T, F>(mut feed: Feed, slice: F) -> watch::Receiver<T>
where
    T: PartialEq + Send + Sync + 'static,
    F: Fn(Option<&MachineConfig>) -> T + Send + 'static,
{
    let (tx, rx) = watch::channel(slice(feed.borrow_and_update().as_deref()));
    tokio::spawn(async move {
        while feed.changed().await.is_ok() {
            let now = slice(feed.borrow_and_update().as_deref());
            tx.send_if_modified(|old| {
                let changed = *old != now;
                if changed {
                    *old = now;
                }
                changed
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    rx
}

/// Reads `path`; parses it when its bytes differ from the last ones read.
fn load<T, P>(path: &Path, last: &mut Option<Vec<u8>>, tx: &watch::Sender<Option<T>>, parse: &P)
where
    P: Fn(&Path, &[u8]) -> Option<T>,
{
    let bytes = match std::fs::read(path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!("reading {}: {e}", path.display());
            return;
        }
    };
    if bytes == *last {
        return;
    }
    let value = match &bytes {
        None => None,
        Some(b) => match parse(path, b) {
            Some(v) => Some(v),
            None => {
                *last = bytes;
                return;
            }
        },
    };
    *last = bytes;
    tx.send_replace(value);
}

/// inotify on the file's directory: the file is replaced by rename, so the
/// directory is what sees it come and go.
struct Watcher {
    fd: AsyncFd<InotifyFd>,
    name: std::ffi::OsString,
}

/// `AsyncFd` wants `AsRawFd`, which nix's `Inotify` leaves out.
struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl Watcher {
    fn new(path: &Path) -> std::io::Result<Watcher> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .ok_or_else(|| std::io::Error::other("the path names no file"))?
            .to_owned();
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        inotify.add_watch(
            dir,
            AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_CLOSE_WRITE
                | AddWatchFlags::IN_DELETE
                | AddWatchFlags::IN_MOVED_FROM
                | AddWatchFlags::IN_DELETE_SELF
                | AddWatchFlags::IN_MOVE_SELF,
        )?;
        // SAFETY: the Inotify is owned by the AsyncFd for its whole life,
        // and its descriptor never changes.
        let fd = unsafe {
            AsyncFd::register_with_interest(InotifyFd(inotify), tokio::io::Interest::READABLE)
        }
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Watcher { fd, name })
    }

    /// Waits for an event about the file; `false` when the directory
    /// itself went away (the caller watches anew).
    async fn changed(&mut self) -> bool {
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                return false;
            };
            let events = match guard.get_inner().0.read_events() {
                Ok(events) => events,
                Err(nix::errno::Errno::EAGAIN) => {
                    guard.clear_ready();
                    continue;
                }
                Err(_) => return false,
            };
            let gone = AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF;
            if events.iter().any(|e| e.mask.intersects(gone)) {
                return false;
            }
            // A full queue loses events: read the file to be sure.
            let overflow = AddWatchFlags::IN_Q_OVERFLOW;
            if events
                .iter()
                .any(|e| e.mask.contains(overflow) || e.name.as_deref() == Some(&self.name))
            {
                return true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One generated config (its keys are new each time), renamed.
    fn config(hostname: &str) -> String {
        static BASE: std::sync::OnceLock<MachineConfig> = std::sync::OnceLock::new();
        let mut c = BASE
            .get_or_init(|| {
                crate::generate::generate(&crate::generate::Options {
                    cluster_name: "demo".into(),
                    endpoint: "https://10.0.0.1:6443".into(),
                    ..Default::default()
                })
                .expect("generated")
                .worker
            })
            .clone();
        c.machine.network.hostname = Some(hostname.into());
        serde_json::to_string(&c).expect("serializes")
    }

    fn publish(path: &Path, text: &str) {
        slate_common::fs::write_atomic(path, text.as_bytes(), 0o600).expect("written");
    }

    async fn next_hostname(rx: &mut watch::Receiver<Option<String>>) -> Option<String> {
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("a change within 5 s")
            .expect("feed alive");
        rx.borrow_and_update().clone()
    }

    // One test, so the process-wide parse counter counts only its parses.
    #[tokio::test(flavor = "current_thread")]
    async fn one_parse_per_change_whoever_listens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("machine-config.json");
        let before = parses();
        let feed = follow(path.clone());
        assert!(feed.borrow().is_none(), "nothing published yet");
        let hostname =
            |c: Option<&MachineConfig>| c.and_then(|c| c.machine.network.hostname.clone());
        let mut slices: Vec<_> = (0..3).map(|_| derive(feed.clone(), hostname)).collect();

        publish(&path, &config("a"));
        for rx in &mut slices {
            assert_eq!(next_hostname(rx).await.as_deref(), Some("a"));
        }
        assert_eq!(parses() - before, 1, "three listeners, one parse");

        // The same bytes again: no parse and no wake-up.
        publish(&path, &config("a"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(parses() - before, 1, "unchanged bytes are not parsed");
        assert!(!slices[0].has_changed().expect("alive"));
        publish(&path, &config("b"));
        for rx in &mut slices {
            assert_eq!(next_hostname(rx).await.as_deref(), Some("b"));
        }
        assert_eq!(parses() - before, 2);

        // A broken file leaves the last good config in place.
        publish(&path, "{not json");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(parses() - before, 3);
        assert_eq!(slices[0].borrow().as_deref(), Some("b"));
        publish(&path, &config("c"));
        assert_eq!(next_hostname(&mut slices[0]).await.as_deref(), Some("c"));
        assert_eq!(parses() - before, 4);

        std::fs::remove_file(&path).expect("removed");
        assert_eq!(next_hostname(&mut slices[0]).await, None, "withdrawn");
    }
}
