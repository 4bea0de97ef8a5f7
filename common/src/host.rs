//! The node's names as the kernel has them now: what apid's certificate is
//! asked for (by apid) and what it may be signed for (by machined). One
//! function for both, so the two never disagree about what is the node's.

use std::net::IpAddr;

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The node's non-loopback, non-link-local addresses.
pub fn addresses() -> Vec<IpAddr> {
    let Ok(ifaddrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out: Vec<IpAddr> = ifaddrs
        .filter_map(|ifa| ifa.address)
        .filter_map(|a| {
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .filter(|ip| match ip {
            IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local(),
            IpAddr::V6(v6) => !v6.is_loopback() && !v6.is_unicast_link_local(),
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Every name apid's certificate is for: the hostname, loopback, the
/// node's addresses and `cert_sans` (`machine.certSANs`).
pub fn api_names(cert_sans: &[String]) -> Vec<String> {
    let mut names = vec![
        hostname(),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    names.extend(addresses().into_iter().map(|a| a.to_string()));
    names.extend(cert_sans.iter().cloned());
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_names_hold_the_hostname_loopback_and_the_extra_names() {
        let names = api_names(&["api.example".to_owned()]);
        assert_eq!(names[0], hostname());
        for n in ["localhost", "127.0.0.1", "::1", "api.example"] {
            assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
        }
        for a in addresses() {
            assert!(!a.is_loopback());
        }
    }
}
