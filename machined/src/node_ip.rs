//! Which of the node's addresses it advertises to Kubernetes and to etcd:
//! one rule (`machine.kubelet.nodeIP.validSubnets`) for both, so kubelet's
//! `--node-ip` and etcd's peer URL never disagree.

use std::net::IpAddr;

/// The first address of the ready file (`IFNAME ADDR/PREFIX SOURCE` per
/// line) inside `valid` (all when empty; `!CIDR` excludes), loopback never.
pub fn node_ip(ready: &str, valid: &[String]) -> Option<IpAddr> {
    let (exclude, include): (Vec<&String>, Vec<&String>) =
        valid.iter().partition(|v| v.starts_with('!'));
    let nets = |list: Vec<&String>| -> Vec<ipnet::IpNet> {
        list.iter()
            .filter_map(|s| s.trim_start_matches('!').parse().ok())
            .collect()
    };
    let (include, exclude) = (nets(include), nets(exclude));
    ready
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|a| a.split('/').next()?.parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_loopback())
        .find(|ip| {
            (include.is_empty() || include.iter().any(|n| n.contains(ip)))
                && !exclude.iter().any(|n| n.contains(ip))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ip_follows_the_valid_subnets() {
        let ready = "lo 127.0.0.1/8 static\neth0 10.0.2.15/24 dhcp\neth1 192.168.5.4/24 config\n";
        assert_eq!(node_ip(ready, &[]), Some("10.0.2.15".parse().unwrap()));
        assert_eq!(
            node_ip(ready, &["192.168.0.0/16".into()]),
            Some("192.168.5.4".parse().unwrap())
        );
        assert_eq!(
            node_ip(ready, &["!10.0.0.0/8".into()]),
            Some("192.168.5.4".parse().unwrap())
        );
        assert_eq!(node_ip(ready, &["172.16.0.0/12".into()]), None);
        assert_eq!(node_ip("", &[]), None);
    }
}
