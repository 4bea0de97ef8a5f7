//! Small IPv4 helpers shared by the `ip=` parser and the DHCP lease code.

use std::net::Ipv4Addr;

/// Prefix length of a contiguous netmask (`255.255.255.0` → 24); `None` when
/// the mask has holes (`255.0.255.0`), which no kernel route can express.
pub fn mask_to_prefix(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let prefix = bits.leading_ones();
    // Contiguous means every bit after the leading ones is zero.
    (bits.checked_shl(prefix).unwrap_or(0) == 0).then_some(prefix as u8)
}

/// Netmask of a prefix length (24 → `255.255.255.0`). Lengths above 32 are
/// clamped to 32; callers validate before.
pub fn prefix_to_mask(prefix: u8) -> Ipv4Addr {
    let prefix = u32::from(prefix.min(32));
    Ipv4Addr::from(u32::MAX.checked_shl(32 - prefix).unwrap_or(0))
}

/// The historic class A/B/C prefix the kernel's `ip=` code (and RFC 2131
/// clients without option 1) fall back to when no netmask is given.
pub fn classful_prefix(addr: Ipv4Addr) -> u8 {
    match addr.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

/// The network address of `addr/prefix` (host bits cleared).
pub fn network(addr: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(addr) & u32::from(prefix_to_mask(prefix)))
}

/// Whether `other` is inside `addr/prefix`.
pub fn same_subnet(addr: Ipv4Addr, prefix: u8, other: Ipv4Addr) -> bool {
    network(addr, prefix) == network(other, prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_prefixes() {
        let cases: &[(&str, Option<u8>)] = &[
            ("255.255.255.0", Some(24)),
            ("255.255.255.255", Some(32)),
            ("0.0.0.0", Some(0)),
            ("255.255.240.0", Some(20)),
            ("255.0.255.0", None),
            ("0.255.255.255", None),
        ];
        for (mask, want) in cases {
            let mask: Ipv4Addr = mask.parse().unwrap();
            assert_eq!(mask_to_prefix(mask), *want, "{mask}");
            if let Some(p) = want {
                assert_eq!(prefix_to_mask(*p), mask);
            }
        }
    }

    #[test]
    fn subnets() {
        let a = Ipv4Addr::new(10, 0, 2, 15);
        assert_eq!(network(a, 24), Ipv4Addr::new(10, 0, 2, 0));
        assert!(same_subnet(a, 24, Ipv4Addr::new(10, 0, 2, 2)));
        assert!(!same_subnet(a, 24, Ipv4Addr::new(10, 0, 3, 2)));
        assert_eq!(classful_prefix(a), 8);
        assert_eq!(classful_prefix(Ipv4Addr::new(172, 16, 0, 1)), 16);
        assert_eq!(classful_prefix(Ipv4Addr::new(192, 168, 0, 1)), 24);
    }
}
