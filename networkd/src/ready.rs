//! The network-ready file other daemons wait for
//! ([`slate_common::constants::NETWORK_READY_FILE`]): one line per
//! configured non-loopback address, `IFNAME ADDRESS/PREFIX SOURCE`. It exists
//! exactly while at least one address is configured.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Where an address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Dhcp,
    Static,
    /// A static address of `machine.network` (the reconciler's).
    Config,
}

/// The ready file, shared by the DHCP/`ip=` path and the reconciler.
pub type SharedReady = std::sync::Arc<std::sync::Mutex<ReadyFile>>;

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Dhcp => "dhcp",
            Source::Static => "static",
            Source::Config => "config",
        })
    }
}

/// One configured address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub ifname: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub source: Source,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadyError {
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: slate_common::fs::AtomicWriteError,
    },
    #[error("removing {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The set of addresses and the file that mirrors it.
#[derive(Debug)]
pub struct ReadyFile {
    path: PathBuf,
    entries: Vec<Entry>,
}

impl ReadyFile {
    /// Starts empty and removes a file left by a previous run: after a
    /// restart nothing is known to be configured until it is applied again.
    pub fn new(path: &Path) -> Result<Self, ReadyError> {
        let mut file = ReadyFile {
            path: path.to_owned(),
            entries: Vec::new(),
        };
        file.sync()?;
        Ok(file)
    }

    /// Adds or replaces the address of `entry.ifname` from the same source.
    pub fn set(&mut self, entry: Entry) -> Result<(), ReadyError> {
        self.entries
            .retain(|e| !(e.ifname == entry.ifname && e.source == entry.source));
        self.entries.push(entry);
        self.entries.sort();
        self.sync()
    }

    /// Removes the address of `ifname` from `source`.
    pub fn remove(&mut self, ifname: &str, source: Source) -> Result<(), ReadyError> {
        self.entries
            .retain(|e| !(e.ifname == ifname && e.source == source));
        self.sync()
    }

    pub fn render(&self) -> String {
        self.entries
            .iter()
            .map(|e| format!("{} {}/{} {}\n", e.ifname, e.address, e.prefix_len, e.source))
            .collect()
    }

    fn sync(&mut self) -> Result<(), ReadyError> {
        if self.entries.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ReadyError::Remove {
                    path: self.path.clone(),
                    source: e,
                }),
                _ => Ok(()),
            };
        }
        slate_common::fs::write_atomic(&self.path, self.render().as_bytes(), 0o644).map_err(
            |source| ReadyError::Write {
                path: self.path.clone(),
                source,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ifname: &str, addr: &str, source: Source) -> Entry {
        Entry {
            ifname: ifname.into(),
            address: addr.parse().unwrap(),
            prefix_len: 24,
            source,
        }
    }

    #[test]
    fn file_follows_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("network.ready");
        std::fs::write(&path, "stale\n").unwrap();
        let mut ready = ReadyFile::new(&path).unwrap();
        assert!(!path.exists(), "stale file from a previous run is removed");

        ready.set(entry("eth0", "10.0.2.15", Source::Dhcp)).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "eth0 10.0.2.15/24 dhcp\n"
        );

        ready
            .set(entry("eth1", "192.168.1.5", Source::Static))
            .unwrap();
        ready.set(entry("eth0", "10.0.2.16", Source::Dhcp)).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "eth0 10.0.2.16/24 dhcp\neth1 192.168.1.5/24 static\n"
        );

        ready.remove("eth0", Source::Dhcp).unwrap();
        ready.remove("eth1", Source::Static).unwrap();
        assert!(!path.exists());
    }
}
