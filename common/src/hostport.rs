//! `host:port` as users and configs write it: slatectl's `-e/-n`, the
//! balancer's endpoints, `cluster.controlPlane.endpoint`. One parser, so a
//! name that one place accepts is not refused by another.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// A host (a DNS name or an IP address, IPv6 without brackets) and a port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostPortError {
    #[error("endpoint {0:?} has no port (want HOST:PORT)")]
    NoPort(String),
    #[error("endpoint {0:?} has an invalid port")]
    BadPort(String),
    #[error(
        "endpoint {0:?} has an invalid host (an IPv6 address goes in brackets: [fd00::1]:6443)"
    )]
    BadHost(String),
    #[error("endpoint URL {0:?} is not https://HOST[:PORT]")]
    BadUrl(String),
}

impl HostPort {
    /// `host:port`, `[v6]:port` or `v4:port`: the port is required.
    pub fn parse(s: &str) -> Result<HostPort, HostPortError> {
        Self::split(s, None)
    }

    /// `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address;
    /// `default_port` when none is given.
    pub fn parse_or(s: &str, default_port: u16) -> Result<HostPort, HostPortError> {
        Self::split(s.trim(), Some(default_port))
    }

    /// The host and port of `https://HOST[:PORT][/…]`; without a port,
    /// `default_port`, or an error when that is `None`.
    pub fn from_https_url(url: &str, default_port: Option<u16>) -> Result<HostPort, HostPortError> {
        let bad = || HostPortError::BadUrl(url.to_owned());
        let rest = url.strip_prefix("https://").ok_or_else(bad)?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.is_empty() || authority.contains('@') {
            return Err(bad());
        }
        Self::split(authority, default_port)
    }

    /// The IP address when the host is one (then nothing to resolve).
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    fn split(s: &str, default_port: Option<u16>) -> Result<HostPort, HostPortError> {
        let bad_host = || HostPortError::BadHost(s.to_owned());
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(bad_host)?;
            if host.parse::<Ipv6Addr>().is_err() {
                return Err(bad_host());
            }
            match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None if after.is_empty() => (host, None),
                None => return Err(bad_host()),
            }
        } else if s.matches(':').count() > 1 {
            // A bare IPv6 address has colons of its own: it is taken whole
            // where a port may be left out, and refused where one is
            // needed rather than guessing where the port starts.
            if default_port.is_none() || s.parse::<Ipv6Addr>().is_err() {
                return Err(bad_host());
            }
            (s, None)
        } else {
            match s.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        if !host.contains(':') && !valid_name(host) {
            return Err(bad_host());
        }
        let port = match (port, default_port) {
            (Some(p), _) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| HostPortError::BadPort(s.to_owned()))?,
            (None, Some(p)) => p,
            (None, None) => return Err(HostPortError::NoPort(s.to_owned())),
        };
        Ok(HostPort {
            host: host.to_owned(),
            port,
        })
    }
}

/// A DNS name or an IPv4 address: what may stand before the colon.
fn valid_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

impl From<SocketAddr> for HostPort {
    fn from(addr: SocketAddr) -> Self {
        HostPort {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(host: &str, port: u16) -> HostPort {
        HostPort {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn with_a_port_required() {
        assert_eq!(HostPort::parse("10.0.0.1:6443"), Ok(hp("10.0.0.1", 6443)));
        assert_eq!(
            HostPort::parse("cp.example:6443"),
            Ok(hp("cp.example", 6443))
        );
        assert_eq!(HostPort::parse("[fd00::1]:6443"), Ok(hp("fd00::1", 6443)));
        for (bad, want) in [
            ("cp.example", HostPortError::NoPort("cp.example".into())),
            ("[fd00::1]", HostPortError::NoPort("[fd00::1]".into())),
            (
                "fd00::1:6443",
                HostPortError::BadHost("fd00::1:6443".into()),
            ),
            ("h:0", HostPortError::BadPort("h:0".into())),
            ("h:70000", HostPortError::BadPort("h:70000".into())),
            (":6443", HostPortError::BadHost(":6443".into())),
            ("a b:1", HostPortError::BadHost("a b:1".into())),
            ("[nope]:1", HostPortError::BadHost("[nope]:1".into())),
        ] {
            assert_eq!(HostPort::parse(bad), Err(want), "{bad:?}");
        }
    }

    #[test]
    fn with_a_default_port() {
        let t = |s: &str| HostPort::parse_or(s, 50000);
        assert_eq!(t("10.0.0.1"), Ok(hp("10.0.0.1", 50000)));
        assert_eq!(t(" node-1 "), Ok(hp("node-1", 50000)));
        assert_eq!(t("10.0.0.1:1234"), Ok(hp("10.0.0.1", 1234)));
        assert_eq!(t("[::1]:7"), Ok(hp("::1", 7)));
        assert_eq!(t("[fd00::1]"), Ok(hp("fd00::1", 50000)));
        assert_eq!(t("fd00::1"), Ok(hp("fd00::1", 50000)));
        for bad in [
            "",
            ":50000",
            "host:",
            "host:0",
            "host:70000",
            "[::1",
            "[::1]x",
            "a:b:c",
        ] {
            assert!(t(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn from_urls() {
        let u = |s: &str| HostPort::from_https_url(s, Some(443));
        assert_eq!(u("https://cp.example:6443"), Ok(hp("cp.example", 6443)));
        assert_eq!(u("https://cp.example/"), Ok(hp("cp.example", 443)));
        assert_eq!(u("https://[fd00::1]:6443/x"), Ok(hp("fd00::1", 6443)));
        assert_eq!(u("https://[fd00::1]"), Ok(hp("fd00::1", 443)));
        for bad in ["http://cp:6443", "https://", "https://u@cp:6443", "cp:6443"] {
            assert!(u(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(
            HostPort::from_https_url("https://cp.example", None),
            Err(HostPortError::NoPort("cp.example".into()))
        );
        assert_eq!(hp("fd00::1", 1).to_string(), "[fd00::1]:1");
        assert_eq!(hp("fd00::1", 1).ip(), "fd00::1".parse().ok());
    }
}
