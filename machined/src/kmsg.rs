//! The kernel log, read from `/dev/kmsg`: each read returns one record,
//! `PRIORITY,SEQUENCE,MICROSECONDS,FLAGS;MESSAGE`, and the device can be
//! polled for new ones, so `dmesg -f` waits without polling.

use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

/// A record as `dmesg` prints it: `[   5.140900] message`; `None` for a
/// record that is not one.
pub fn format_record(raw: &str) -> Option<String> {
    let (head, message) = raw.split_once(';')?;
    let micros: u64 = head.split(',').nth(2)?.parse().ok()?;
    // Continuation lines (" SUBSYSTEM=…") are metadata, not the message.
    let message = message.lines().next().unwrap_or("");
    // The kernel quotes its command line; a slate.config URL may hold a
    // credential, and dmesg is readable by more than the operator role.
    let message = crate::url::redact_cmdline(message);
    Some(format!(
        "[{:>5}.{:06}] {message}",
        micros / 1_000_000,
        micros % 1_000_000
    ))
}

/// Sends the kernel log to `tx`: the last `tail` records kept (all with
/// `None`), then, with `follow`, each new one, until the receiver goes.
pub async fn stream(
    path: &Path,
    follow: bool,
    tail: Option<usize>,
    tx: mpsc::Sender<String>,
) -> std::io::Result<()> {
    let file = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    // SAFETY: `file` is an open File owned by the AsyncFd for its whole
    // life; its descriptor never changes.
    let mut fd = unsafe { AsyncFd::register_with_interest(file, tokio::io::Interest::READABLE) }
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut buf = vec![0u8; 8192];
    let mut backlog = Vec::new();
    // What is there now.
    loop {
        match read_record(fd.get_mut(), &mut buf) {
            Ok(Some(line)) => backlog.push(line),
            Ok(None) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    let skip = tail.map_or(0, |n| backlog.len().saturating_sub(n));
    for line in backlog.into_iter().skip(skip) {
        if tx.send(line).await.is_err() {
            return Ok(());
        }
    }
    if !follow {
        return Ok(());
    }
    loop {
        let mut ready = tokio::select! {
            ready = fd.readable_mut() => ready?,
            () = tx.closed() => return Ok(()),
        };
        match read_record(ready.get_inner_mut(), &mut buf) {
            Ok(Some(line)) => {
                if tx.send(line).await.is_err() {
                    return Ok(());
                }
            }
            Ok(None) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => ready.clear_ready(),
            Err(e) => return Err(e),
        }
    }
}

/// One record; `Ok(None)` for one that was overwritten before we read it
/// (EPIPE: the ring wrapped, reading goes on) or that does not parse.
fn read_record(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<Option<String>> {
    match file.read(buf) {
        Ok(n) => Ok(format_record(&String::from_utf8_lossy(&buf[..n]))),
        Err(e) if e.raw_os_error() == Some(libc::EPIPE) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_record_hides_config_url_credentials() {
        let line = format_record(
            "5,0,0,-;Command line: console=ttyS0 slate.config=https://user:s3cret@10.0.2.2/c.yaml?token=t0k quiet\n",
        )
        .unwrap();
        assert_eq!(
            line,
            "[    0.000000] Command line: console=ttyS0 slate.config=https://10.0.2.2/c.yaml quiet"
        );
    }

    #[test]
    fn records_read_like_dmesg() {
        assert_eq!(
            format_record("6,339,5140900,-;NET: Registered protocol family 10\n SUBSYSTEM=net\n")
                .as_deref(),
            Some("[    5.140900] NET: Registered protocol family 10")
        );
        assert_eq!(format_record("garbage"), None);
        assert_eq!(format_record("6,1,notanumber,-;x"), None);
    }
}
