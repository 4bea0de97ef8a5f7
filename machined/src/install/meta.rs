//! META (partition 4, 1 MiB, no filesystem): Slate's record of its boot
//! slots (which version each holds, whether it is good, trying or failed,
//! since when and why) and of a reset waiting for the next boot.
//!
//! Why not a file on BOOT: the record must survive whatever happens to
//! BOOT's filesystem during an upgrade write, and a reset must be able to
//! say "wipe STATE" somewhere that is not STATE. Why hand-written: no crate
//! stores a small record on a raw partition with torn-write safety; the
//! scheme below is twenty lines.
//!
//! Two copies of [`COPY_SIZE`] bytes at offsets 0 and [`COPY_SIZE`]. Each
//! is `SLMETA01`, a sequence number (LE u64), the body's length (LE u32),
//! the body's SHA-256, then the body (JSON). A write goes to the copy that
//! does not hold the newest valid record, with the next sequence number,
//! and is synced; a write torn by a power cut leaves the other copy whole.
//! GRUB never reads META: the boot-once switch it needs is its own
//! environment block on BOOT (see `grub.rs`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};

use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"SLMETA01";
const HEADER: usize = 8 + 8 + 4 + 32;
/// Each copy's room; the body is a few hundred bytes.
pub const COPY_SIZE: usize = 64 * 1024;

/// A boot slot on BOOT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }

    pub fn parse(s: &str) -> Option<Slot> {
        match s {
            "A" => Some(Slot::A),
            "B" => Some(Slot::B),
            _ => None,
        }
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a slot stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotState {
    /// Being written: what a power cut during an upgrade leaves.
    Writing,
    /// Written and verified; GRUB boots it once at the next boot.
    Staged,
    /// Booted once; the health gate decides.
    Trying,
    /// Passed the health gate (or installed): bootable.
    Good,
    /// Did not boot, or did not become healthy in time.
    Failed,
}

impl SlotState {
    pub fn name(self) -> &'static str {
        match self {
            SlotState::Writing => "writing",
            SlotState::Staged => "staged",
            SlotState::Trying => "trying",
            SlotState::Good => "good",
            SlotState::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotRecord {
    pub version: String,
    pub state: SlotState,
    /// When it entered `state`, seconds since the Unix epoch.
    pub since: i64,
    /// Why, for `failed` (and how, for the rest).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    #[serde(default)]
    pub slots: BTreeMap<Slot, SlotRecord>,
    /// Partition labels a reset asked to wipe, done early at the next boot
    /// before anything mounts them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wipe: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("{op} META")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the META record is {0} bytes, more than a copy holds")]
    TooLarge(usize),
}

fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> MetaError {
    move |source| MetaError::Io { op, source }
}

/// One copy's record and sequence number, if the copy is whole.
pub fn decode(copy: &[u8]) -> Option<(u64, Record)> {
    if copy.len() < HEADER || &copy[..8] != MAGIC {
        return None;
    }
    let seq = u64::from_le_bytes(copy[8..16].try_into().ok()?);
    let len = u32::from_le_bytes(copy[16..20].try_into().ok()?) as usize;
    let body = copy.get(HEADER..HEADER.checked_add(len)?)?;
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    if digest.as_ref() != &copy[20..52] {
        return None;
    }
    let record = serde_json::from_slice(body).ok()?;
    Some((seq, record))
}

fn encode(seq: u64, record: &Record) -> Result<Vec<u8>, MetaError> {
    let body = serde_json::to_vec(record).unwrap_or_default();
    if HEADER + body.len() > COPY_SIZE {
        return Err(MetaError::TooLarge(body.len()));
    }
    let mut copy = Vec::with_capacity(HEADER + body.len());
    copy.extend_from_slice(MAGIC);
    copy.extend_from_slice(&seq.to_le_bytes());
    copy.extend_from_slice(&(body.len() as u32).to_le_bytes());
    copy.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, &body).as_ref());
    copy.extend_from_slice(&body);
    Ok(copy)
}

/// META opened: the newest whole record and where the next write goes.
pub struct Meta {
    file: File,
    seq: u64,
    /// The copy holding the newest record (the next write takes the other).
    newest: Option<usize>,
    pub record: Record,
}

impl Meta {
    /// Reads both copies; a blank or unreadable META is an empty record.
    pub fn open(mut file: File) -> Result<Self, MetaError> {
        let mut best: Option<(usize, u64, Record)> = None;
        for index in 0..2 {
            let mut copy = vec![0u8; COPY_SIZE];
            file.seek(SeekFrom::Start((index * COPY_SIZE) as u64))
                .map_err(io("seeking in"))?;
            // A short read (a tiny test file) leaves zeros: no record.
            let mut filled = 0;
            while filled < COPY_SIZE {
                match file.read(&mut copy[filled..]).map_err(io("reading"))? {
                    0 => break,
                    n => filled += n,
                }
            }
            if let Some((seq, record)) = decode(&copy)
                && best.as_ref().is_none_or(|(_, s, _)| seq > *s)
            {
                best = Some((index, seq, record));
            }
        }
        Ok(match best {
            Some((index, seq, record)) => Self {
                file,
                seq,
                newest: Some(index),
                record,
            },
            None => Self {
                file,
                seq: 0,
                newest: None,
                record: Record::default(),
            },
        })
    }

    /// Writes `self.record` to the older copy and syncs it.
    pub fn save(&mut self) -> Result<(), MetaError> {
        let seq = self.seq + 1;
        let copy = encode(seq, &self.record)?;
        let index = match self.newest {
            Some(0) => 1,
            _ => 0,
        };
        self.file
            .seek(SeekFrom::Start((index * COPY_SIZE) as u64))
            .map_err(io("seeking in"))?;
        self.file.write_all(&copy).map_err(io("writing"))?;
        self.file.sync_data().map_err(io("syncing"))?;
        self.seq = seq;
        self.newest = Some(index);
        Ok(())
    }

    /// Sets `slot`'s record (and keeps its version when `version` is None).
    pub fn set(&mut self, slot: Slot, state: SlotState, version: Option<&str>, reason: &str) {
        let version = version
            .map(str::to_owned)
            .or_else(|| self.record.slots.get(&slot).map(|r| r.version.clone()))
            .unwrap_or_default();
        self.record.slots.insert(
            slot,
            SlotRecord {
                version,
                state,
                since: now(),
                reason: reason.to_owned(),
            },
        );
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank() -> (tempfile::NamedTempFile, File) {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.as_file().set_len(1024 * 1024).unwrap();
        let file = tmp.reopen().unwrap();
        (tmp, file)
    }

    #[test]
    fn a_blank_meta_is_an_empty_record_and_writes_alternate() {
        let (tmp, file) = blank();
        let mut meta = Meta::open(file).unwrap();
        assert_eq!(meta.record, Record::default());
        meta.set(Slot::A, SlotState::Good, Some("1.0"), "installed");
        meta.save().unwrap();
        meta.set(Slot::B, SlotState::Staged, Some("1.1"), "");
        meta.save().unwrap();

        let again = Meta::open(tmp.reopen().unwrap()).unwrap();
        assert_eq!(again.record, meta.record);
        assert_eq!(again.seq, 2);
        // Both copies are whole, the second one newer.
        let bytes = std::fs::read(tmp.path()).unwrap();
        assert_eq!(decode(&bytes[..COPY_SIZE]).unwrap().0, 1);
        assert_eq!(decode(&bytes[COPY_SIZE..2 * COPY_SIZE]).unwrap().0, 2);
    }

    #[test]
    fn a_torn_write_falls_back_to_the_other_copy() {
        let (tmp, file) = blank();
        let mut meta = Meta::open(file).unwrap();
        meta.set(Slot::A, SlotState::Good, Some("1.0"), "");
        meta.save().unwrap();
        let first = meta.record.clone();
        meta.set(Slot::B, SlotState::Writing, Some("1.1"), "");
        meta.save().unwrap();
        // The power fails in the middle of the second copy.
        let mut bytes = std::fs::read(tmp.path()).unwrap();
        bytes[COPY_SIZE + HEADER + 5] ^= 0xff;
        std::fs::write(tmp.path(), &bytes).unwrap();
        let after = Meta::open(tmp.reopen().unwrap()).unwrap();
        assert_eq!(after.record, first);
        // And the next write goes over the torn copy, not the good one.
        let mut after = after;
        after.set(Slot::B, SlotState::Failed, None, "interrupted");
        after.save().unwrap();
        let bytes = std::fs::read(tmp.path()).unwrap();
        assert_eq!(decode(&bytes[..COPY_SIZE]).unwrap().1, first);
        assert_eq!(decode(&bytes[COPY_SIZE..]).unwrap().0, 2);
    }

    #[test]
    fn garbage_is_no_record() {
        assert!(decode(b"").is_none());
        assert!(decode(&[0xff; 100]).is_none());
        let mut copy = encode(7, &Record::default()).unwrap();
        assert!(decode(&copy).is_some());
        // A length pointing past the end.
        copy[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&copy).is_none());
    }
}
