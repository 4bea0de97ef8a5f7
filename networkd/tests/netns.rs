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
    /// serving 10.99.0.0/24 on the server end; returns the client link.
    fn with_dhcp_server(prefix: &str) -> (Netns, String) {
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
        ns.start_dnsmasq(&server);
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

    fn start_dnsmasq(&mut self, server: &str) {
        let log = File::create(self.path("dnsmasq.log")).unwrap();
        let leases = self.path("leases");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                server,
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
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting dnsmasq");
        self.children.push(child);
    }

    /// Waits (bounded) for the ready file, the result networkd promises.
    fn wait_ready(&mut self) -> String {
        let path = self.path("run/network.ready");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&path) {
                return text;
            }
            for child in &mut self.children {
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
    let (mut ns, client) = Netns::with_dhcp_server("slc");
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
    let (mut ns, client) = Netns::with_dhcp_server("sld");
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
