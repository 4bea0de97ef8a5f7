use super::*;

#[test]
fn longest_prefix_wins() {
    let mut routes: Vec<(IpNet, u32)> = vec![
        ("10.0.0.0/8".parse().unwrap(), 0),
        ("10.1.0.0/16".parse().unwrap(), 1),
    ];
    routes.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
    let find = |ip: &str| route(&routes, ip.parse().unwrap());
    assert_eq!(find("10.1.2.3"), Some(1));
    assert_eq!(find("10.2.0.1"), Some(0));
    assert_eq!(find("192.168.0.1"), None);
}
