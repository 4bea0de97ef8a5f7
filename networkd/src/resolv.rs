//! resolv.conf, written whole and atomically so a resolver never reads a
//! half-written file. The image links `/etc/resolv.conf` to
//! [`slate_common::constants::RESOLV_CONF_FILE`] because `/etc` is
//! read-only.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// glibc and musl read at most three `nameserver` lines.
const MAX_NAMESERVERS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum ResolvError {
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: slate_common::fs::AtomicWriteError,
    },
}

/// The file's content: who wrote it, the name servers, the search domains.
pub fn render(nameservers: &[IpAddr], search: &[&str]) -> String {
    let mut out = String::from("# Written by slate networkd.\n");
    for ns in nameservers.iter().take(MAX_NAMESERVERS) {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    // A domain from the network is untrusted text: only plain domain names
    // get in, so it cannot inject `options` or other lines.
    let domains: Vec<&str> = search
        .iter()
        .copied()
        .filter(|d| crate::hostname::is_valid(d))
        .collect();
    if !domains.is_empty() {
        out.push_str(&format!("search {}\n", domains.join(" ")));
    }
    out
}

/// Writes [`render`]'s output to `path` (mode 0644: every process resolves).
pub fn write_text(path: &Path, text: &str) -> Result<(), ResolvError> {
    slate_common::fs::write_atomic(path, text.as_bytes(), 0o644).map_err(|source| {
        ResolvError::Write {
            path: path.to_owned(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_nameservers_and_search() {
        let ns: Vec<IpAddr> = ["10.0.2.3", "1.1.1.1", "8.8.8.8", "9.9.9.9"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(
            render(&ns, &["example.com"]),
            "# Written by slate networkd.\n\
             nameserver 10.0.2.3\nnameserver 1.1.1.1\nnameserver 8.8.8.8\n\
             search example.com\n"
        );
        assert_eq!(
            render(&[], &["evil\noptions ndots:15"]),
            "# Written by slate networkd.\n"
        );
    }

    #[test]
    fn writes_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        write_text(&path, &render(&["10.0.2.3".parse().unwrap()], &[])).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("nameserver 10.0.2.3\n"), "{text}");
    }
}
