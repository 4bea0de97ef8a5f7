//! Real-kernel tests: the built `networkd` runs in a network namespace of
//! its own (`ip netns exec`), against dnsmasq in a second namespace joined
//! by a veth pair. Nothing touches the host's network. Root only; skipped
//! with a message otherwise. Needs `ip` (iproute2) and `dnsmasq`
//! (Debian `dnsmasq-base`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why the test cannot run here, if it cannot.
fn skip_reason() -> Option<String> {
    if !is_root() {
        return Some("not root".into());
    }
    for tool in ["ip", "dnsmasq"] {
        let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(tool).exists());
        if !found {
            return Some(format!("{tool} not installed"));
        }
    }
    None
}

/// Straight to stderr: libtest captures `eprintln!` of passing tests, and a
/// skip must be visible.
fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {why} (needs root, ip, dnsmasq)"
    );
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn run(args: &[&str]) {
    let status = Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(status.success(), "{args:?}: {status}");
}

fn output(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(out.status.success(), "{args:?}: {}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Namespaces and processes of one test; all of it goes away on drop, also
/// when an assertion failed.
struct Netns {
    names: Vec<String>,
    children: Vec<Child>,
    dnsmasq: Option<Child>,
    /// The server namespace and extra arguments, to start dnsmasq again.
    dnsmasq_args: (String, Vec<String>),
    dir: tempfile::TempDir,
}

impl Netns {
    /// Namespaces `<tag>s` (server) and `<tag>c` (client) joined by veth
    /// `<tag>s` / `<tag>c`.
    fn new(tag: &str) -> Netns {
        let server = format!("{tag}s");
        let client = format!("{tag}c");
        let mut ns = Netns {
            names: Vec::new(),
            children: Vec::new(),
            dnsmasq: None,
            dnsmasq_args: (server.clone(), Vec::new()),
            dir: tempfile::tempdir().unwrap(),
        };
        for name in [&server, &client] {
            // A leftover from an aborted run would make `add` fail.
            let _ = Command::new("ip")
                .args(["netns", "del", name])
                .stderr(Stdio::null())
                .status();
            run(&["ip", "netns", "add", name]);
            ns.names.push(name.clone());
            run(&["ip", "-n", name, "link", "set", "lo", "up"]);
        }
        run(&[
            "ip", "link", "add", &server, "netns", &server, "type", "veth", "peer", "name",
            &client, "netns", &client,
        ]);
        run(&["ip", "-n", &server, "link", "set", &server, "up"]);
        ns
    }

    /// Namespaces named after `prefix` and this process, with dnsmasq
    /// serving 10.99.0.0/24 on the server end (`extra`: more dnsmasq
    /// arguments); returns the client link.
    fn with_dhcp_server(prefix: &str, extra: &[&str]) -> (Netns, String) {
        let tag = format!("{prefix}{}", std::process::id() % 100_000);
        let (server, client) = (format!("{tag}s"), format!("{tag}c"));
        let mut ns = Netns::new(&tag);
        run(&[
            "ip",
            "-n",
            &server,
            "addr",
            "add",
            "10.99.0.1/24",
            "dev",
            &server,
        ]);
        ns.dnsmasq_args = (server, extra.iter().map(|a| (*a).to_owned()).collect());
        ns.start_dnsmasq();
        (ns, client)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts `networkd` in the client namespace with `cmdline` and a fake
    /// sysfs in which the veth looks like a NIC.
    fn start_networkd(&mut self, client: &str, cmdline: &str) {
        std::fs::write(self.path("cmdline"), cmdline).unwrap();
        std::fs::create_dir_all(self.path(&format!("sys/class/net/{client}/device"))).unwrap();
        let log = File::create(self.path("networkd.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", client, env!("CARGO_BIN_EXE_networkd")])
            .env("SLATE_NETWORKD_CMDLINE", self.path("cmdline"))
            .env("SLATE_NETWORKD_SYSFS", self.path("sys"))
            .env("SLATE_NETWORKD_RESOLV_CONF", self.path("resolv.conf"))
            .env("SLATE_NETWORKD_READY_FILE", self.path("run/network.ready"))
            // Everything else networkd keeps under /run, in the test's dir.
            .env(
                "SLATE_NETWORKD_CONFIG",
                self.path("run/machine-config.json"),
            )
            .env("SLATE_NETWORKD_OWNED_FILE", self.path("run/networkd-owned"))
            .env("SLATE_NETWORKD_SOCKET", self.path("run/networkd.sock"))
            // `ip netns exec` shares the host's UTS namespace.
            .env("SLATE_NETWORKD_SET_HOSTNAME", "0")
            // The namespace shares the host's clock: never set it.
            .env("SLATE_NETWORKD_SYNC_TIME", "0")
            .env("SLATE_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting networkd");
        self.children.push(child);
    }

    /// Starts dnsmasq (again), appending to its log.
    fn start_dnsmasq(&mut self) {
        let server = self.dnsmasq_args.0.clone();
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.path("dnsmasq.log"))
            .unwrap();
        let leases = self.path("leases");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &server,
                "dnsmasq",
                "--no-daemon",
                "--conf-file=/dev/null",
                "--port=0",
            ])
            .arg(format!("--interface={server}"))
            .args([
                "--bind-interfaces",
                "--user=root",
                "--dhcp-authoritative",
                // Offers without dnsmasq's 3 s ping check of a new address.
                "--no-ping",
                "--dhcp-range=10.99.0.50,10.99.0.60,255.255.255.0,2m",
                "--dhcp-option=option:router,10.99.0.1",
                "--dhcp-option=option:dns-server,10.99.0.1",
                "--dhcp-option=option:domain-name,test.example",
                "--log-dhcp",
            ])
            .arg(format!("--dhcp-leasefile={}", leases.display()))
            .args(&self.dnsmasq_args.1)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting dnsmasq");
        self.dnsmasq = Some(child);
    }

    fn stop_dnsmasq(&mut self) {
        if let Some(mut child) = self.dnsmasq.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits (bounded) for the ready file, the result networkd promises.
    fn wait_ready(&mut self) -> String {
        let path = self.path("run/network.ready");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&path) {
                return text;
            }
            for child in self.children.iter_mut().chain(self.dnsmasq.as_mut()) {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("a helper exited early ({status})\n{}", self.logs());
                }
            }
            assert!(
                Instant::now() < deadline,
                "no ready file after 30 s\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn logs(&self) -> String {
        ["networkd.log", "dnsmasq.log"]
            .iter()
            .map(|f| {
                format!(
                    "--- {f}\n{}",
                    std::fs::read_to_string(self.path(f)).unwrap_or_default()
                )
            })
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.stop_dnsmasq();
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for name in &self.names {
            // Deleting the namespace also deletes the veth end inside it.
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
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
    let mut config = slate_machinery::generate::generate(&slate_machinery::generate::Options {
        cluster_name: "dhcp".into(),
        endpoint: "https://10.0.0.1:6443".into(),
        ..Default::default()
    })
    .unwrap()
    .worker;
    config.machine.network = slate_machinery::yaml::from_str(&format!(
        "interfaces:\n  - interface: {client}\n    dhcp: true\n"
    ))
    .unwrap();
    std::fs::create_dir_all(ns.path("run")).unwrap();
    std::fs::write(
        ns.path("run/machine-config.json"),
        config.to_json().unwrap(),
    )
    .unwrap();
    ns.start_networkd(&client, "console=ttyS0 ip=off\n");

    let ready = ns.wait_ready();
    assert!(
        ready.starts_with(&format!("{client} 10.99.0.")) && ready.trim_end().ends_with(" dhcp"),
        "{ready:?}\n{}",
        ns.logs()
    );
}

#[test]
fn dhcp_from_dnsmasq() {
    if let Some(why) = skip_reason() {
        skipped("dhcp_from_dnsmasq", &why);
        return;
    }
    let (mut ns, client) = Netns::with_dhcp_server("sld", &[]);
    // No ip=: DHCP on the first (fake-sysfs) Ethernet link.
    ns.start_networkd(&client, "console=ttyS0 quiet\n");

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
    ns.start_networkd(&client, "console=ttyS0 quiet\n");
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
