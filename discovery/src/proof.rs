//! Proof that a write to the discovery service comes from a cluster
//! member. A node's copy of the service serves its own cluster only, and
//! knows the cluster secret; without a proof anyone who reaches port 3000
//! could fill its tables or displace affiliates (their records would not
//! open, but the real ones would be gone).
//!
//! The header [`PROOF_HEADER`] is `{unix_ms}.{mac}`: an HMAC-SHA256, under
//! a key derived from the cluster secret, of the method, the path (which
//! names the cluster and the affiliate), the time and the body. A proof is
//! accepted for [`MAX_SKEW`] around its time; a replay within that window
//! can only put back the same sealed record, which the readers order by
//! version anyway. A standalone (public) service holds no key and ignores
//! the header.

use std::time::Duration;

use base64::Engine as _;
use ring::hmac;

use crate::record::ClusterKeys;

pub const PROOF_HEADER: &str = "slate-proof";
/// How far a proof's time may be from the service's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("no {PROOF_HEADER} header: writes need proof of cluster membership")]
    Missing,
    #[error("a malformed {PROOF_HEADER} header")]
    Malformed,
    #[error("a proof more than {} s from the service's clock", MAX_SKEW.as_secs())]
    Stale,
    #[error("a proof that does not verify (another cluster's secret, or a changed request)")]
    Invalid,
}

fn message(method: &str, path: &str, unix_ms: u64, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(method.len() + path.len() + 32 + body.len());
    for part in [
        method.as_bytes(),
        path.as_bytes(),
        unix_ms.to_string().as_bytes(),
    ] {
        m.extend_from_slice(&(part.len() as u64).to_be_bytes());
        m.extend_from_slice(part);
    }
    m.extend_from_slice(body);
    m
}

/// The header value for a request of `method` to `path` with `body`.
pub fn sign(keys: &ClusterKeys, method: &str, path: &str, unix_ms: u64, body: &[u8]) -> String {
    let tag = hmac::sign(keys.write_key(), &message(method, path, unix_ms, body));
    format!(
        "{unix_ms}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
    )
}

/// Checks the header value `proof` of a request, at `now_ms`.
pub fn verify(
    keys: &ClusterKeys,
    proof: Option<&str>,
    method: &str,
    path: &str,
    body: &[u8],
    now_ms: u64,
) -> Result<(), ProofError> {
    let proof = proof.ok_or(ProofError::Missing)?;
    let (time, mac) = proof.split_once('.').ok_or(ProofError::Malformed)?;
    let unix_ms: u64 = time.parse().map_err(|_| ProofError::Malformed)?;
    let mac = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(mac)
        .map_err(|_| ProofError::Malformed)?;
    if unix_ms.abs_diff(now_ms) > MAX_SKEW.as_millis() as u64 {
        return Err(ProofError::Stale);
    }
    hmac::verify(
        keys.write_key(),
        &message(method, path, unix_ms, body),
        &mac,
    )
    .map_err(|_| ProofError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::{ID, SECRET};

    const PATH: &str = "/v1/clusters/k/affiliates/a";

    #[test]
    fn a_proof_binds_the_cluster_the_request_and_the_time() {
        let keys = ClusterKeys::new(&ID, &SECRET);
        let now = 1_800_000_000_000;
        let proof = sign(&keys, "PUT", PATH, now, b"sealed");
        assert_eq!(
            verify(&keys, Some(&proof), "PUT", PATH, b"sealed", now + 1000),
            Ok(())
        );
        let other = ClusterKeys::new(&ID, &[0x33; 32]);
        let forged = sign(&other, "PUT", PATH, now, b"sealed");
        assert_eq!(
            verify(&keys, Some(&forged), "PUT", PATH, b"sealed", now),
            Err(ProofError::Invalid)
        );
        for (method, path, body) in [
            ("DELETE", PATH, &b"sealed"[..]),
            ("PUT", "/v1/clusters/k/affiliates/b", b"sealed"),
            ("PUT", PATH, b"changed"),
        ] {
            assert_eq!(
                verify(&keys, Some(&proof), method, path, body, now),
                Err(ProofError::Invalid),
                "{method} {path}"
            );
        }
        let late = now + MAX_SKEW.as_millis() as u64 + 1;
        assert_eq!(
            verify(&keys, Some(&proof), "PUT", PATH, b"sealed", late),
            Err(ProofError::Stale)
        );
        assert_eq!(
            verify(&keys, None, "PUT", PATH, b"", now),
            Err(ProofError::Missing)
        );
        for junk in [
            "",
            "x",
            "12.",
            "12.!!",
            ".abc",
            "99999999999999999999999.AA",
        ] {
            assert!(
                verify(&keys, Some(junk), "PUT", PATH, b"", now).is_err(),
                "{junk:?}"
            );
        }
    }
}
