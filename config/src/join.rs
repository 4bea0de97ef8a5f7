//! Join tokens and the join URL a node boots with (`slate.join=` on the
//! kernel command line): what a node needs to register with the control
//! plane without carrying any of the cluster's keys (docs/join.md).
//!
//! - A token is `ID.SECRET` in Kubernetes' bootstrap-token shape
//!   (`[a-z0-9]{6}.[a-z0-9]{16}`): the id names it in lists and logs, the
//!   secret (about 82 bits) is kept by the cluster only as a digest.
//! - The join URL is `https://TOKEN@HOST:PORT/sha256:HEX`: the trust
//!   service to register with, and the SHA-256 of the machine CA
//!   certificate (DER) the node checks the service's certificate against,
//!   as kubeadm's `--discovery-token-ca-cert-hash` does. It has no `?`,
//!   `&`, `;` or `$`, so it goes into a GRUB `linux` line unquoted.

use std::fmt;

use crate::MachineType;

/// The shape of a token's id and secret.
const ID_LEN: usize = 6;
const SECRET_LEN: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("a join token looks like abcdef.0123456789abcdef (6 and 16 of a-z, 0-9), not {0:?}")]
    BadToken(String),
    #[error("slate.join={0:?}: {1}")]
    BadUrl(String, &'static str),
    #[error("the system random number generator failed")]
    Random,
}

/// A join token: `ID.SECRET`.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub id: String,
    secret: String,
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinToken({}.…)", self.id)
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.id, self.secret)
    }
}

fn token_chars(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl JoinToken {
    /// A new random token.
    pub fn generate() -> Result<Self, JoinError> {
        let text = crate::generate::random_token().map_err(|_| JoinError::Random)?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, JoinError> {
        let bad = || JoinError::BadToken(text.chars().take(40).collect());
        let (id, secret) = text.trim().split_once('.').ok_or_else(bad)?;
        if !token_chars(id, ID_LEN) || !token_chars(secret, SECRET_LEN) {
            return Err(bad());
        }
        Ok(Self {
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// SHA-256 of the secret, hex: what the cluster keeps.
    pub fn secret_digest(&self) -> String {
        hex(ring::digest::digest(&ring::digest::SHA256, self.secret.as_bytes()).as_ref())
    }

    /// Whether `digest` (from [`Self::secret_digest`]) is this token's,
    /// compared in constant time.
    pub fn matches(&self, digest: &str) -> bool {
        slate_pki::same_secret(self.secret_digest().as_bytes(), digest.as_bytes())
    }
}

pub use slate_common::hex;

/// Where and how a node registers: `https://TOKEN@HOST:PORT/sha256:HEX`.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinUrl {
    /// `HOST:PORT` of a control-plane node's trust service (IPv6 in
    /// brackets).
    pub target: String,
    /// SHA-256 of the machine CA certificate, DER.
    pub ca_sha256: [u8; 32],
    pub token: JoinToken,
}

impl fmt::Debug for JoinUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for JoinUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "https://{}@{}/sha256:{}",
            self.token,
            self.target,
            hex(&self.ca_sha256)
        )
    }
}

/// The URL of the trust service without a token: what `gen join-token`
/// prints and `slate-image --join` takes.
pub fn service_url(target: &str, ca_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, ca_der);
    format!("https://{target}/sha256:{}", hex(digest.as_ref()))
}

impl JoinUrl {
    /// Parses a join URL; `token` is used when the URL has none (the form
    /// `gen join-token` prints as the service URL).
    pub fn parse(text: &str, token: Option<&JoinToken>) -> Result<Self, JoinError> {
        let shown: String = text.chars().take(200).collect();
        let bad = |why| JoinError::BadUrl(redact(&shown), why);
        let rest = text
            .trim()
            .strip_prefix("https://")
            .ok_or_else(|| bad("must start with https://"))?;
        let (authority, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("needs /sha256:HEX, the machine CA's digest"))?;
        let (token_text, target) = match authority.rsplit_once('@') {
            Some((t, target)) => (Some(t), target),
            None => (None, authority),
        };
        let token = match (token_text, token) {
            (Some(t), _) => JoinToken::parse(t).map_err(|_| bad("the token is not ID.SECRET"))?,
            (None, Some(t)) => t.clone(),
            (None, None) => return Err(bad("has no join token (https://TOKEN@HOST:PORT/…)")),
        };
        crate::endpoint_host(&format!("https://{target}"))
            .filter(|_| has_port(target))
            .ok_or_else(|| bad("needs HOST:PORT after the token"))?;
        let hex_digest = path
            .strip_prefix("sha256:")
            .ok_or_else(|| bad("needs /sha256:HEX, the machine CA's digest"))?;
        let ca_sha256 = slate_pki::tls::parse_fingerprint(hex_digest)
            .map_err(|_| bad("the CA digest is not 64 hex digits"))?;
        Ok(Self {
            target: target.to_owned(),
            ca_sha256,
            token,
        })
    }

    /// The `slate.join=` value of a kernel command line, if it has one.
    pub fn from_cmdline(cmdline: &str) -> Option<Result<Self, JoinError>> {
        cmdline
            .split_whitespace()
            .filter_map(|arg| arg.strip_prefix("slate.join="))
            .next_back()
            .map(|v| Self::parse(v, None))
    }

    /// For logs: the token's secret left out.
    pub fn redacted(&self) -> String {
        format!(
            "https://{}.…@{}/sha256:{}",
            self.token.id,
            self.target,
            hex(&self.ca_sha256)
        )
    }
}

fn has_port(target: &str) -> bool {
    target
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
}

/// Hides every token secret in text shown in errors (wherever it stands:
/// a URL without `@` may carry one as its host), keeping the ids.
fn redact(text: &str) -> String {
    let bytes = text.as_bytes();
    let is_token_char = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let secret_at = i + 1;
        let is_secret = bytes[i] == b'.'
            && i >= ID_LEN
            && bytes[i - ID_LEN..i].iter().all(|b| is_token_char(*b))
            && bytes.len() >= secret_at + SECRET_LEN
            && bytes[secret_at..secret_at + SECRET_LEN]
                .iter()
                .all(|b| is_token_char(*b));
        if is_secret {
            out.push_str(".…");
            i = secret_at + SECRET_LEN;
            continue;
        }
        // Whole characters: the text may hold any UTF-8.
        let ch = text[i..].chars().next().unwrap_or('?');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// A role's name as people type it.
pub fn parse_role(text: &str) -> Option<MachineType> {
    match text {
        "worker" => Some(MachineType::Worker),
        "controlplane" | "control-plane" => Some(MachineType::Controlplane),
        _ => None,
    }
}

pub fn role_name(role: MachineType) -> &'static str {
    match role {
        MachineType::Worker => "worker",
        MachineType::Controlplane => "controlplane",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "abc123.0123456789abcdef";

    #[test]
    fn tokens_parse_and_print_back() {
        let t = JoinToken::parse(TOKEN).unwrap();
        assert_eq!(t.id, "abc123");
        assert_eq!(t.to_string(), TOKEN);
        assert!(
            !format!("{t:?}").contains("0123456789"),
            "Debug hides the secret"
        );
        for bad in [
            "",
            "abc123",
            "ABC123.0123456789abcdef",
            "abc12.0123456789abcdef",
            "abc123.0123456789abcde!",
        ] {
            assert!(JoinToken::parse(bad).is_err(), "{bad:?} parsed");
        }
        let made = JoinToken::generate().unwrap();
        assert_eq!(JoinToken::parse(&made.to_string()).unwrap(), made);
        assert_ne!(made, JoinToken::generate().unwrap());
    }

    #[test]
    fn a_secret_matches_only_its_digest() {
        let t = JoinToken::parse(TOKEN).unwrap();
        let other = JoinToken::parse("abc123.0123456789abcdeg").unwrap();
        assert!(t.matches(&t.secret_digest()));
        assert!(!other.matches(&t.secret_digest()));
    }

    #[test]
    fn join_urls_round_trip_and_hide_the_secret() {
        let digest = "ab".repeat(32);
        let text = format!("https://{TOKEN}@10.5.0.2:50001/sha256:{digest}");
        let url = JoinUrl::parse(&text, None).unwrap();
        assert_eq!(url.target, "10.5.0.2:50001");
        assert_eq!(url.ca_sha256, [0xab; 32]);
        assert_eq!(url.to_string(), text);
        assert!(!url.redacted().contains("0123456789abcdef"));
        let v6 = JoinUrl::parse(
            &format!("https://{TOKEN}@[fd00::2]:50001/sha256:{digest}"),
            None,
        )
        .unwrap();
        assert_eq!(v6.target, "[fd00::2]:50001");
        // The service URL with the token given apart (slate-image --join-token).
        let token = JoinToken::parse(TOKEN).unwrap();
        let apart = JoinUrl::parse(
            &format!("https://10.5.0.2:50001/sha256:{digest}"),
            Some(&token),
        )
        .unwrap();
        assert_eq!(apart, url);
        assert_eq!(
            JoinUrl::from_cmdline(&format!("quiet slate.join={text} panic=-1"))
                .unwrap()
                .unwrap(),
            url
        );
        assert!(JoinUrl::from_cmdline("quiet panic=-1").is_none());
    }

    #[test]
    fn bad_join_urls_say_what_is_wrong_without_the_secret() {
        let digest = "ab".repeat(32);
        for (text, says) in [
            (format!("http://{TOKEN}@h:1/sha256:{digest}"), "https://"),
            (format!("https://{TOKEN}@h:1"), "sha256"),
            (format!("https://{TOKEN}@h/sha256:{digest}"), "HOST:PORT"),
            (format!("https://h:1/sha256:{digest}"), "no join token"),
            (format!("https://{TOKEN}@h:1/sha256:abc"), "64 hex"),
            (format!("https://nope.x@h:1/sha256:{digest}"), "ID.SECRET"),
            (format!("https://{TOKEN}/sha256:{digest}"), "no join token"),
        ] {
            let err = JoinUrl::parse(&text, None).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
            assert!(!err.contains("0123456789abcdef"), "{err}");
        }
    }
}
