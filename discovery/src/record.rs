//! Affiliate records: what a node tells the other members of its mesh about
//! itself, sealed so that only holders of the cluster secret can read or
//! make one.
//!
//! # Envelope (format 1)
//! ```text
//! 0      1              9         13            25
//! | fmt  | cluster tag  | key id  | nonce       | ciphertext … | tag (16) |
//! ```
//! - `fmt` = [`FORMAT`]; anything else is refused before any crypto.
//! - cluster tag: the first 8 bytes of the cluster id hash; a record of
//!   another cluster is told apart from a forgery without a decryption.
//! - key id: 4 bytes derived from the sealing key, so a node with a different
//!   (rotated, mistyped) secret is reported as such rather than as forgery.
//! - nonce: 12 random bytes per record.
//! - ciphertext: ChaCha20-Poly1305 over the JSON [`Record`], with the header
//!   (first 25 bytes) and the full 32-byte cluster id hash as associated
//!   data.
//!
//! # Keys
//! All from the cluster id (salt) and secret (input key material) with
//! HKDF-SHA256, one label each, so no derived value reveals another or the
//! secret: the sealing key, the key id, and the [`ClusterKeys::cluster_key`]
//! the discovery service files records under. The cluster id hash and the
//! mesh prefix are plain SHA-256 of the (not secret) cluster id.

use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ipnet::IpNet;
use ring::rand::SecureRandom as _;
use ring::{aead, digest, hkdf};
use serde::{Deserialize, Serialize};

/// The envelope format this code writes and reads.
pub const FORMAT: u8 = 1;
/// Largest sealed record accepted anywhere (open, service, gossip).
pub const MAX_SEALED: usize = 4096;
/// Longest a record may claim to live.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// How far in the future a record's issue time may be (clock skew).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);
/// Most endpoint candidates one record may carry.
pub const MAX_ENDPOINTS: usize = 32;
/// Most routed networks one record may carry.
pub const MAX_NETWORKS: usize = 64;
/// Most peers a record says it sees (about 90 bytes each: a record stays
/// well under [`MAX_SEALED`]); a node in a larger cluster lists the
/// first ones only.
pub const MAX_SEEN: usize = 24;

const TAG_LEN: usize = 16;
const CLUSTER_TAG_LEN: usize = 8;
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = aead::NONCE_LEN;
/// Bytes before the ciphertext.
pub const HEADER_LEN: usize = 1 + CLUSTER_TAG_LEN + KEY_ID_LEN + NONCE_LEN;
/// Shortest envelope that can be a record at all.
pub const MIN_SEALED: usize = HEADER_LEN + TAG_LEN;

const LABEL_SEAL: &[u8] = b"slate discovery v1: record sealing key";
const LABEL_KEY_ID: &[u8] = b"slate discovery v1: sealing key id";
const LABEL_CLUSTER_KEY: &[u8] = b"slate discovery v1: service cluster key";
const LABEL_WRITE: &[u8] = b"slate discovery v1: service write proof key";
const LABEL_CLUSTER_HASH: &[u8] = b"slate discovery v1: cluster id hash\0";
const LABEL_MESH_PREFIX: &[u8] = b"slate mesh v1: ula prefix\0";
const LABEL_MESH_IID: &[u8] = b"slate mesh v1: interface id\0";

/// A node's WireGuard (X25519) public key.
pub type PublicKey = [u8; 32];

/// What one node publishes about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
// Unknown fields are ignored, not refused: a newer node may add fields
// within format 1 and older nodes still read the rest.
pub struct Record {
    /// Stable node identity; the gossip table keys on it.
    pub node_id: String,
    pub hostname: String,
    #[serde(with = "b64_key")]
    pub public_key: PublicKey,
    /// Must equal [`mesh_address`] of the cluster id and `public_key`.
    pub mesh_address: Ipv6Addr,
    /// Where the node may be reached: its own addresses, then the public
    /// endpoints peers saw it at.
    #[serde(default)]
    pub endpoints: Vec<SocketAddr>,
    /// Networks routed to this node through the mesh (node IPs, pod CIDRs).
    #[serde(default, with = "nets")]
    pub networks: Vec<IpNet>,
    /// Set on control-plane nodes: where their Kubernetes API listens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<ControlPlane>,
    /// Peers this node reaches directly, at the endpoint their datagrams
    /// come from: behind NAT that is their public mapping, which others
    /// then try; and it tells a node whose direct path fails which peers
    /// can relay to them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<Seen>,
    /// Issue time in Unix milliseconds; also the version (a node never
    /// issues two records with the same value, see [`next_version`]).
    pub issued_ms: u64,
    /// How long after `issued_ms` the record is valid.
    pub ttl_secs: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlane {
    pub api_endpoint: SocketAddr,
}

/// A peer a node reaches directly, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Seen {
    #[serde(with = "b64_key")]
    pub public_key: PublicKey,
    pub endpoint: SocketAddr,
}

impl Record {
    /// When the record stops being valid, in Unix milliseconds.
    pub fn expires_ms(&self) -> u64 {
        self.issued_ms
            .saturating_add(u64::from(self.ttl_secs).saturating_mul(1000))
    }

    /// Decodes and checks a record's plaintext (after the AEAD opened it).
    /// Public so the fuzzer reaches the parser without the key.
    pub fn from_plaintext(bytes: &[u8]) -> Result<Self, OpenError> {
        let record: Record = serde_json::from_slice(bytes).map_err(OpenError::Malformed)?;
        record.check().map_err(OpenError::Invalid)?;
        Ok(record)
    }

    /// Field bounds, checked on seal and on open.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.node_id.is_empty() || self.node_id.len() > 128 {
            return Err("node id must be 1 to 128 bytes");
        }
        if self.node_id.chars().any(char::is_control) || self.hostname.chars().any(char::is_control)
        {
            return Err("node id and hostname must not contain control characters");
        }
        if self.hostname.len() > 253 {
            return Err("hostname longer than 253 bytes");
        }
        if self.endpoints.len() > MAX_ENDPOINTS {
            return Err("too many endpoints");
        }
        if self.networks.len() > MAX_NETWORKS {
            return Err("too many networks");
        }
        if self.seen.len() > MAX_SEEN {
            return Err("too many seen peers");
        }
        if self.ttl_secs == 0 || u64::from(self.ttl_secs) > MAX_TTL.as_secs() {
            return Err("ttl must be between 1 s and MAX_TTL");
        }
        Ok(())
    }
}

/// The version for a node's next record: now, or one past the last one if
/// the clock has not moved on (or went back).
pub fn next_version(last: Option<u64>, now: SystemTime) -> u64 {
    let now = unix_ms(now);
    match last {
        Some(last) if last >= now => last + 1,
        _ => now,
    }
}

/// Unix milliseconds of `t` (0 before the epoch).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The mesh's /64: `fd` + a 40-bit global id from the cluster id hash
/// (RFC 4193) + subnet 0.
pub fn mesh_prefix(cluster_id: &[u8; 32]) -> [u8; 8] {
    let h = sha256(&[LABEL_MESH_PREFIX, cluster_id]);
    [0xfd, h[0], h[1], h[2], h[3], h[4], 0, 0]
}

/// A node's mesh address: the cluster's [`mesh_prefix`] and 64 bits of a
/// hash of the public key, so it is never allocated and never collides in
/// practice (a collision of two keys' 64-bit ids is a 2^-32 event only at
/// 2^16 nodes).
pub fn mesh_address(cluster_id: &[u8; 32], public_key: &PublicKey) -> Ipv6Addr {
    let prefix = mesh_prefix(cluster_id);
    let iid = sha256(&[LABEL_MESH_IID, public_key]);
    let mut a = [0u8; 16];
    a[..8].copy_from_slice(&prefix);
    a[8..].copy_from_slice(&iid[..8]);
    Ipv6Addr::from(a)
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    ctx.finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{field} is not base64")]
    Base64 {
        field: &'static str,
        #[source]
        source: base64::DecodeError,
    },
    #[error("{field} is {len} bytes, not 32")]
    Length { field: &'static str, len: usize },
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the record is invalid: {0}")]
    Invalid(&'static str),
    #[error("the sealed record would be {len} bytes, more than {MAX_SEALED}")]
    TooLarge { len: usize },
    #[error("encoding the record")]
    Encode(#[source] serde_json::Error),
    #[error("the system random number generator failed")]
    Random,
    #[error("the record's mesh address is not the one its key and cluster give")]
    AddressMismatch,
}

/// Why a sealed record was refused. Callers drop the record and carry on;
/// the variant is for logs and tests.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{len} bytes is more than a record may be ({MAX_SEALED})")]
    TooLarge { len: usize },
    #[error("{len} bytes is shorter than any record ({MIN_SEALED})")]
    Truncated { len: usize },
    #[error("unknown record format {0}")]
    UnknownFormat(u8),
    #[error("the record belongs to another cluster")]
    WrongCluster,
    #[error("the record is sealed with another secret")]
    WrongKey,
    #[error("the record does not authenticate (forged or damaged)")]
    Forged,
    #[error("the record's contents do not decode")]
    Malformed(#[source] serde_json::Error),
    #[error("the record is invalid: {0}")]
    Invalid(&'static str),
    #[error("the record's mesh address is not the one its key and cluster give")]
    AddressMismatch,
    #[error("the record expired at {expires_ms} ms (now {now_ms} ms)")]
    Expired { expires_ms: u64, now_ms: u64 },
    #[error("the record is issued at {issued_ms} ms, too far after now ({now_ms} ms)")]
    FromTheFuture { issued_ms: u64, now_ms: u64 },
}

/// Everything a node derives from `cluster.id` and `cluster.secret`.
pub struct ClusterKeys {
    cluster_id: [u8; 32],
    cluster_hash: [u8; 32],
    key_id: [u8; KEY_ID_LEN],
    cluster_key: String,
    key: aead::LessSafeKey,
    /// HMAC key of write proofs ([`crate::proof`]).
    write_key: ring::hmac::Key,
    rng: ring::rand::SystemRandom,
}

impl std::fmt::Debug for ClusterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterKeys")
            .field("cluster_key", &self.cluster_key)
            .finish_non_exhaustive()
    }
}

/// An HKDF output length (ring's `KeyType`).
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn decode32(field: &'static str, b64: &str) -> Result<[u8; 32], KeyError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|source| KeyError::Base64 { field, source })?;
    let len = bytes.len();
    bytes
        .try_into()
        .map_err(|_| KeyError::Length { field, len })
}

impl ClusterKeys {
    /// From the config's `cluster.id` and `cluster.secret` (base64, 32
    /// bytes each).
    pub fn from_config(id_b64: &str, secret_b64: &str) -> Result<Self, KeyError> {
        Ok(Self::new(
            &decode32("cluster.id", id_b64)?,
            &decode32("cluster.secret", secret_b64)?,
        ))
    }

    pub fn new(cluster_id: &[u8; 32], secret: &[u8; 32]) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, cluster_id).extract(secret);
        let expand = |label: &[u8], out: &mut [u8]| {
            let info = [label];
            prk.expand(&info, Len(out.len()))
                .and_then(|okm| okm.fill(out))
                .expect("HKDF-SHA256 output of at most 32 bytes");
        };
        let mut seal = [0u8; 32];
        expand(LABEL_SEAL, &mut seal);
        let mut key_id = [0u8; KEY_ID_LEN];
        expand(LABEL_KEY_ID, &mut key_id);
        let mut cluster_key = [0u8; 32];
        expand(LABEL_CLUSTER_KEY, &mut cluster_key);
        let mut write = [0u8; 32];
        expand(LABEL_WRITE, &mut write);
        let key = aead::UnboundKey::new(&aead::CHACHA20_POLY1305, &seal)
            .expect("32 bytes is a ChaCha20-Poly1305 key");
        Self {
            cluster_id: *cluster_id,
            cluster_hash: sha256(&[LABEL_CLUSTER_HASH, cluster_id]),
            key_id,
            cluster_key: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(cluster_key),
            key: aead::LessSafeKey::new(key),
            write_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &write),
            rng: ring::rand::SystemRandom::new(),
        }
    }

    /// The name the discovery service files this cluster's records under:
    /// 43 URL-safe characters that reveal neither the secret nor the id.
    pub fn cluster_key(&self) -> &str {
        &self.cluster_key
    }

    /// The name a node's record is filed under on the service: opaque, so
    /// the service learns no node id or hostname, and stable per node id.
    pub fn affiliate_id(&self, node_id: &str) -> String {
        let h = sha256(&[self.cluster_key.as_bytes(), b"\0", node_id.as_bytes()]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&h[..16])
    }

    pub(crate) fn write_key(&self) -> &ring::hmac::Key {
        &self.write_key
    }

    pub fn cluster_id(&self) -> &[u8; 32] {
        &self.cluster_id
    }

    /// [`mesh_address`] in this cluster.
    pub fn mesh_address(&self, public_key: &PublicKey) -> Ipv6Addr {
        mesh_address(&self.cluster_id, public_key)
    }

    fn header(&self, nonce: &[u8; NONCE_LEN]) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0] = FORMAT;
        h[1..9].copy_from_slice(&self.cluster_hash[..CLUSTER_TAG_LEN]);
        h[9..13].copy_from_slice(&self.key_id);
        h[13..].copy_from_slice(nonce);
        h
    }

    fn aad(&self, header: &[u8]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(HEADER_LEN + 32);
        aad.extend_from_slice(header);
        aad.extend_from_slice(&self.cluster_hash);
        aad
    }

    /// Seals `record` with a fresh random nonce. Random 96-bit nonces are
    /// safe here: a node seals a record a minute, far from the 2^32 records
    /// per key where collisions start to matter.
    pub fn seal(&self, record: &Record) -> Result<Vec<u8>, SealError> {
        record.check().map_err(SealError::Invalid)?;
        if record.mesh_address != self.mesh_address(&record.public_key) {
            return Err(SealError::AddressMismatch);
        }
        let plaintext = serde_json::to_vec(record).map_err(SealError::Encode)?;
        let len = HEADER_LEN + plaintext.len() + TAG_LEN;
        if len > MAX_SEALED {
            return Err(SealError::TooLarge { len });
        }
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
        let header = self.header(&nonce);
        let mut in_out = plaintext;
        self.key
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(self.aad(&header)),
                &mut in_out,
            )
            .map_err(|_| SealError::TooLarge { len })?;
        let mut sealed = Vec::with_capacity(len);
        sealed.extend_from_slice(&header);
        sealed.extend_from_slice(&in_out);
        Ok(sealed)
    }

    /// Opens and checks a sealed record at time `now`.
    pub fn open(&self, sealed: &[u8], now: SystemTime) -> Result<Record, OpenError> {
        let len = sealed.len();
        if len > MAX_SEALED {
            return Err(OpenError::TooLarge { len });
        }
        if len < MIN_SEALED {
            return Err(OpenError::Truncated { len });
        }
        let (header, body) = sealed.split_at(HEADER_LEN);
        if header[0] != FORMAT {
            return Err(OpenError::UnknownFormat(header[0]));
        }
        if header[1..9] != self.cluster_hash[..CLUSTER_TAG_LEN] {
            return Err(OpenError::WrongCluster);
        }
        if header[9..13] != self.key_id {
            return Err(OpenError::WrongKey);
        }
        let nonce: [u8; NONCE_LEN] = header[13..].try_into().expect("12-byte nonce");
        let mut in_out = body.to_vec();
        let plaintext = self
            .key
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(self.aad(header)),
                &mut in_out,
            )
            .map_err(|_| OpenError::Forged)?;
        let record = Record::from_plaintext(plaintext)?;
        if record.mesh_address != self.mesh_address(&record.public_key) {
            return Err(OpenError::AddressMismatch);
        }
        let now_ms = unix_ms(now);
        if record.expires_ms() <= now_ms {
            return Err(OpenError::Expired {
                expires_ms: record.expires_ms(),
                now_ms,
            });
        }
        let skew = u64::try_from(MAX_CLOCK_SKEW.as_millis()).unwrap_or(u64::MAX);
        if record.issued_ms > now_ms.saturating_add(skew) {
            return Err(OpenError::FromTheFuture {
                issued_ms: record.issued_ms,
                now_ms,
            });
        }
        Ok(record)
    }
}

mod b64_key {
    use base64::Engine as _;
    use serde::{Deserialize as _, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(key: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(key))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map_err(D::Error::custom)?;
        bytes
            .try_into()
            .map_err(|_| D::Error::custom("public key is not 32 bytes"))
    }
}

/// `Vec<IpNet>` as CIDR strings (ipnet's own serde support is a feature
/// the rest of the workspace does not build with).
mod nets {
    use ipnet::IpNet;
    use serde::{Deserialize as _, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(nets: &[IpNet], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(nets.iter().map(ToString::to_string))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
        let strings = Vec::<std::borrow::Cow<'de, str>>::deserialize(d)?;
        strings
            .iter()
            .map(|s| s.parse().map_err(D::Error::custom))
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests;
