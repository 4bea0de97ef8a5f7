//! A list of sealed records on the wire: the discovery service's answer to
//! a list request and the gossip bundle nodes pass to their peers.
//!
//! ```text
//! | BUNDLE_FORMAT (1) | len (u16 BE) | sealed record | len | record | …
//! ```
//! The decoder is an iterator that stops at the first framing error, so the
//! records before it are still used; each record is opened on its own.

use crate::record::MAX_SEALED;

/// The bundle format byte.
pub const BUNDLE_FORMAT: u8 = 1;
/// Most records one bundle may carry (a cluster's worth on the service).
pub const MAX_BUNDLE_RECORDS: usize = 1024;
/// Largest possible bundle.
pub const MAX_BUNDLE_BYTES: usize = 1 + MAX_BUNDLE_RECORDS * (2 + MAX_SEALED);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("the bundle is empty")]
    Empty,
    #[error("unknown bundle format {0}")]
    UnknownFormat(u8),
    #[error("record {index}: the length prefix is cut off")]
    TruncatedLength { index: usize },
    #[error("record {index}: {len} bytes is not a record length (1..={MAX_SEALED})")]
    BadLength { index: usize, len: usize },
    #[error("record {index}: {want} bytes announced, {have} left")]
    TruncatedRecord {
        index: usize,
        want: usize,
        have: usize,
    },
    #[error("more than {MAX_BUNDLE_RECORDS} records")]
    TooMany,
}

/// Encodes up to [`MAX_BUNDLE_RECORDS`] records; records that are empty or
/// larger than [`MAX_SEALED`] are skipped (they could not be opened).
pub fn encode<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = vec![BUNDLE_FORMAT];
    for r in records
        .into_iter()
        .filter(|r| !r.is_empty() && r.len() <= MAX_SEALED)
        .take(MAX_BUNDLE_RECORDS)
    {
        out.extend_from_slice(
            &u16::try_from(r.len())
                .expect("MAX_SEALED fits u16")
                .to_be_bytes(),
        );
        out.extend_from_slice(r);
    }
    out
}

/// The records in `bytes`, then at most one error after which it ends.
pub fn decode(bytes: &[u8]) -> Decoder<'_> {
    Decoder {
        rest: bytes,
        index: 0,
        started: false,
        done: false,
    }
}

pub struct Decoder<'a> {
    rest: &'a [u8],
    index: usize,
    started: bool,
    done: bool,
}

impl<'a> Iterator for Decoder<'a> {
    type Item = Result<&'a [u8], BundleError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.step();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

impl<'a> Decoder<'a> {
    fn step(&mut self) -> Option<Result<&'a [u8], BundleError>> {
        if !self.started {
            self.started = true;
            let Some((&format, rest)) = self.rest.split_first() else {
                return Some(Err(BundleError::Empty));
            };
            if format != BUNDLE_FORMAT {
                return Some(Err(BundleError::UnknownFormat(format)));
            }
            self.rest = rest;
        }
        if self.rest.is_empty() {
            return None;
        }
        let index = self.index;
        if index == MAX_BUNDLE_RECORDS {
            return Some(Err(BundleError::TooMany));
        }
        let Some((len, rest)) = self.rest.split_first_chunk::<2>() else {
            return Some(Err(BundleError::TruncatedLength { index }));
        };
        let len = usize::from(u16::from_be_bytes(*len));
        if len == 0 || len > MAX_SEALED {
            return Some(Err(BundleError::BadLength { index, len }));
        }
        if rest.len() < len {
            return Some(Err(BundleError::TruncatedRecord {
                index,
                want: len,
                have: rest.len(),
            }));
        }
        let (record, rest) = rest.split_at(len);
        self.rest = rest;
        self.index += 1;
        Some(Ok(record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_skips_what_could_not_be_a_record() {
        let big = vec![0u8; MAX_SEALED + 1];
        let records: Vec<&[u8]> = vec![b"one", b"", b"three", &big];
        let bytes = encode(records);
        let back: Vec<_> = decode(&bytes).collect::<Result<_, _>>().unwrap();
        assert_eq!(back, vec![&b"one"[..], b"three"]);
        assert_eq!(decode(&encode([])).count(), 0);
    }

    #[test]
    fn framing_errors_keep_the_records_before_them() {
        let table: &[(&[u8], usize, BundleError)] = &[
            (b"", 0, BundleError::Empty),
            (b"\x02", 0, BundleError::UnknownFormat(2)),
            (
                b"\x01\x00\x01a\x00",
                1,
                BundleError::TruncatedLength { index: 1 },
            ),
            (
                b"\x01\x00\x01a\x00\x00",
                1,
                BundleError::BadLength { index: 1, len: 0 },
            ),
            (
                b"\x01\xff\xffa",
                0,
                BundleError::BadLength {
                    index: 0,
                    len: 65535,
                },
            ),
            (
                b"\x01\x00\x01a\x00\x05abc",
                1,
                BundleError::TruncatedRecord {
                    index: 1,
                    want: 5,
                    have: 3,
                },
            ),
        ];
        for (bytes, good, err) in table {
            let items: Vec<_> = decode(bytes).collect();
            assert_eq!(items.len(), good + 1, "{bytes:?}");
            assert!(items[..*good].iter().all(Result::is_ok));
            assert_eq!(items[*good].as_ref().unwrap_err(), err, "{bytes:?}");
        }
    }

    #[test]
    fn at_most_max_records() {
        let one: &[u8] = b"r";
        let mut bytes = encode(std::iter::repeat_n(one, MAX_BUNDLE_RECORDS + 5));
        assert_eq!(decode(&bytes).count(), MAX_BUNDLE_RECORDS);
        bytes.extend_from_slice(b"\x00\x01r");
        let last = decode(&bytes).last().unwrap();
        assert_eq!(last, Err(BundleError::TooMany));
    }
}
