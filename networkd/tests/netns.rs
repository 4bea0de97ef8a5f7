//! Real-kernel tests: the built `networkd` runs in a network namespace of
//! its own, against dnsmasq in a second namespace joined by a veth pair
//! ([`slate_tests::netns`]). Root only; skipped with a message otherwise.

use std::path::Path;
use std::time::{Duration, Instant};

use slate_tests::netns::{Netns, output, skip_reason, skipped};

fn networkd() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_networkd"))
}

/// `ip=off` and a machine config that asks for DHCP on the link by name:
/// the client runs there because the config says so.
#[test]
fn dhcp_where_the_machine_config_asks_for_it() {
    if let Some(why) = skip_reason() {
        skipped("dhcp_where_the_machine_config_asks_for_it", &why);
        return;
    }
    let (mut ns, client) = Netns::with_dhcp_server("slc", &[]);
    ns.write_network_config(&format!(
        "interfaces:\n  - interface: {client}\n    dhcp: true\n"
    ));
    ns.start_networkd(networkd(), &client, "console=ttyS0 ip=off\n");

    let ready = ns.wait_ready();
    assert!(
        ready.starts_with(&format!("{client} 10.99.0.")) && ready.trim_end().ends_with(" dhcp"),
        "{ready:?}\n{}",
        ns.logs()
    );
}

/// `dhcp6: true`: an address and DNS from dnsmasq's DHCPv6 server (which
/// also sends router advertisements with the managed flag).
#[test]
fn dhcp6_address_and_dns_from_dnsmasq() {
    if let Some(why) = skip_reason() {
        skipped("dhcp6_address_and_dns_from_dnsmasq", &why);
        return;
    }
    let (mut ns, client) = Netns::with_dhcp_server(
        "sl6",
        &[
            "--dhcp-range=fd00:99::50,fd00:99::60,64,2m",
            "--enable-ra",
            "--dhcp-option=option6:dns-server,[fd00:99::1]",
            "--dhcp-option=option6:domain-search,v6.example",
        ],
    );
    ns.write_network_config(&format!(
        "interfaces:\n  - interface: {client}\n    dhcp6: true\n"
    ));
    ns.start_networkd(networkd(), &client, "console=ttyS0 ip=off\n");

    // The link-local address passes DAD (~1 s) before the first SOLICIT
    // can leave.
    let deadline = Instant::now() + Duration::from_secs(30);
    let address = loop {
        let addrs = output(&[
            "ip", "-n", &client, "-6", "-o", "addr", "show", "dev", &client,
        ]);
        if let Some(line) = addrs
            .lines()
            .find(|l| l.contains("inet6 fd00:99::") && l.contains("/128"))
        {
            break line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no DHCPv6 address: {addrs}\n{}",
            ns.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        address.contains("valid_lft") && !address.contains("valid_lft forever"),
        "the lease's lifetime: {address}"
    );
    let resolv_path = ns.path("resolv.conf");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resolv = std::fs::read_to_string(&resolv_path).unwrap_or_default();
        if resolv.contains("nameserver fd00:99::1\n") && resolv.contains("search v6.example\n") {
            break;
        }
        assert!(Instant::now() < deadline, "{resolv}\n{}", ns.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ns.logs().contains("DHCPREPLY("), "{}", ns.logs());
}

#[test]
fn dhcp_from_dnsmasq() {
    if let Some(why) = skip_reason() {
        skipped("dhcp_from_dnsmasq", &why);
        return;
    }
    let (mut ns, client) = Netns::with_dhcp_server("sld", &[]);
    // No ip=: DHCP on the first (fake-sysfs) Ethernet link.
    ns.start_networkd(networkd(), &client, "console=ttyS0 quiet\n");

    let ready = ns.wait_ready();
    let line = ready.trim_end();
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields.len(), 3, "{ready:?}");
    assert_eq!(
        (fields[0], fields[2]),
        (client.as_str(), "dhcp"),
        "{ready:?}"
    );
    assert!(
        fields[1].starts_with("10.99.0.") && fields[1].ends_with("/24"),
        "{ready:?}"
    );

    let addrs = output(&["ip", "-n", &client, "-4", "addr", "show", "dev", &client]);
    assert!(
        addrs.contains(&format!("inet {}", fields[1])),
        "{addrs}\n{}",
        ns.logs()
    );
    assert!(addrs.contains("brd 10.99.0.255"), "{addrs}");
    assert!(
        addrs.contains("valid_lft") && !addrs.contains("valid_lft forever"),
        "lease lifetime: {addrs}"
    );
    let routes = output(&["ip", "-n", &client, "-4", "route", "show", "default"]);
    assert!(
        routes.contains("default via 10.99.0.1") && routes.contains("proto dhcp"),
        "{routes}\n{}",
        ns.logs()
    );
    let resolv = std::fs::read_to_string(ns.path("resolv.conf")).unwrap();
    assert!(resolv.contains("nameserver 10.99.0.1\n"), "{resolv}");
    assert!(resolv.contains("search test.example\n"), "{resolv}");
    let log = ns.logs();
    assert!(
        log.contains(&format!(
            "{client}: {} via dhcp from 10.99.0.1, gateway 10.99.0.1, dns 10.99.0.1",
            fields[1]
        )),
        "{log}"
    );

    // Stopped as init stops it at shutdown: the lease goes back to the
    // server (DHCPRELEASE) and off the link, and networkd exits cleanly.
    let status = ns.terminate_networkd();
    assert!(status.success(), "{status}\n{}", ns.logs());
    let address = fields[1].split('/').next().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    // dnsmasq names its own end of the link: `DHCPRELEASE(<server>) <address>`.
    let released = |log: &str| {
        log.lines()
            .any(|l| l.contains("DHCPRELEASE(") && l.contains(&format!(") {address} ")))
    };
    while !released(&ns.logs()) {
        assert!(Instant::now() < deadline, "no DHCPRELEASE\n{}", ns.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    let addrs = output(&["ip", "-n", &client, "-4", "addr", "show", "dev", &client]);
    assert!(!addrs.contains(&format!("inet {address}")), "{addrs}");
}

/// The whole life of a lease against dnsmasq: renewed while the server
/// answers; kept after the server is gone, through RENEWING and REBINDING,
/// until it expires; then removed with its route and name server; and a
/// new one taken when the server is back. dnsmasq's shortest lease is two
/// minutes, so this test takes about 2.5 minutes; T1 and T2 are set to
/// 4 s and 8 s so the renewal and the rebinding start at once.
#[test]
fn a_lease_is_renewed_outlives_its_server_until_expiry_and_comes_back() {
    if let Some(why) = skip_reason() {
        skipped(
            "a_lease_is_renewed_outlives_its_server_until_expiry_and_comes_back",
            &why,
        );
        return;
    }
    const LEASE: Duration = Duration::from_secs(120);
    let (mut ns, client) = Netns::with_dhcp_server(
        "sll",
        &["--dhcp-option=option:T1,4", "--dhcp-option=option:T2,8"],
    );
    ns.start_networkd(networkd(), &client, "console=ttyS0 quiet\n");
    let ready = ns.wait_ready();
    let address = ready.split(' ').nth(1).unwrap().to_owned();
    let has_address = || {
        output(&["ip", "-n", &client, "-4", "addr", "show", "dev", &client])
            .contains(&format!("inet {address}"))
    };
    let has_route = || {
        output(&["ip", "-n", &client, "-4", "route", "show", "default"])
            .contains("default via 10.99.0.1")
    };
    let resolv_path = ns.path("resolv.conf");
    let resolv = || std::fs::read_to_string(&resolv_path).unwrap_or_default();
    assert!(resolv().contains("nameserver 10.99.0.1\n"), "{}", resolv());

    // Renewed at T1: dnsmasq acknowledges a second REQUEST.
    let acks = |ns: &Netns| {
        std::fs::read_to_string(ns.path("dnsmasq.log"))
            .unwrap_or_default()
            .matches("DHCPACK(")
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while acks(&ns) < 2 {
        assert!(Instant::now() < deadline, "no renewal\n{}", ns.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    ns.stop_dnsmasq();
    let stopped = Instant::now();

    // Past T2, REBINDING with nobody answering: the lease still holds.
    std::thread::sleep(Duration::from_secs(20));
    assert!(
        has_address() && has_route(),
        "lost before expiry\n{}",
        ns.logs()
    );

    // At expiry (two minutes after the last ACK) it goes, with its route
    // and its name server.
    let deadline = stopped + LEASE + Duration::from_secs(15);
    while has_address() {
        assert!(Instant::now() < deadline, "kept past expiry\n{}", ns.logs());
        std::thread::sleep(Duration::from_millis(250));
    }
    let gone_after = stopped.elapsed();
    assert!(
        gone_after > LEASE - Duration::from_secs(10),
        "gone {gone_after:?} after the server, before the lease ran out\n{}",
        ns.logs()
    );
    // The kernel ends the address at its lifetime; networkd's own timer,
    // at the same expiry, takes the rest away.
    let lost = format!("{client}: lost DHCP lease on");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ns.logs().contains(&lost) {
        assert!(Instant::now() < deadline, "{}", ns.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(!has_route(), "the default route outlived the lease");
    assert!(!resolv().contains("10.99.0.1"), "{}", resolv());

    // The server is back: a new lease (the same address, from its lease file).
    ns.start_dnsmasq();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(has_address() && has_route()) {
        assert!(Instant::now() < deadline, "no new lease\n{}", ns.logs());
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn static_from_cmdline() {
    if let Some(why) = skip_reason() {
        skipped("static_from_cmdline", &why);
        return;
    }
    let tag = format!("sls{}", std::process::id() % 100_000);
    let client = format!("{tag}c");
    let mut ns = Netns::new(&tag);
    ns.start_networkd(
        networkd(),
        &client,
        &format!("ip=10.98.0.5::10.98.0.1:255.255.255.0:node1:{client}:off:10.98.0.53\n"),
    );
    let ready = ns.wait_ready();
    assert_eq!(ready, format!("{client} 10.98.0.5/24 static\n"));
    let addrs = output(&["ip", "-n", &client, "-4", "addr", "show", "dev", &client]);
    assert!(addrs.contains("inet 10.98.0.5/24"), "{addrs}");
    let routes = output(&["ip", "-n", &client, "-4", "route", "show", "default"]);
    assert!(
        routes.contains("default via 10.98.0.1") && routes.contains("proto static"),
        "{routes}\n{}",
        ns.logs()
    );
    let resolv = std::fs::read_to_string(ns.path("resolv.conf")).unwrap();
    assert!(resolv.contains("nameserver 10.98.0.53\n"), "{resolv}");
}
