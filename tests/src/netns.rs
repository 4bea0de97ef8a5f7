//! Network namespaces for networkd's real-kernel tests and benchmarks: the
//! built `networkd` runs in a namespace of its own (`ip netns exec`),
//! against dnsmasq in a second namespace joined by a veth pair. Nothing
//! touches the host's network, and everything goes away on drop. Root
//! only. Needs `ip` (iproute2) and `dnsmasq` (Debian `dnsmasq-base`).
// A test fixture: a panic here fails the test that set it up.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why namespaces cannot be used here, if they cannot.
pub fn skip_reason() -> Option<String> {
    if !is_root() {
        return Some("not root".into());
    }
    missing_tool(&["ip", "dnsmasq"])
}

/// The first of `tools` that is not installed, as a reason to skip.
pub fn missing_tool(tools: &[&str]) -> Option<String> {
    tools
        .iter()
        .find(|tool| {
            !["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
                .iter()
                .any(|d| Path::new(d).join(tool).exists())
        })
        .map(|tool| format!("{tool} not installed"))
}

/// Runs `body` on a thread in a fresh network namespace (unshare) with a
/// current-thread runtime of its own; `ip` children inherit the
/// namespace, and it goes away with the thread, also when an assertion
/// fails. With `skip` set, prints `SKIPPED name: why` and runs nothing.
pub fn in_fresh_netns<F>(name: &str, skip: Option<String>, body: F)
where
    F: AsyncFnOnce() + Send + 'static,
{
    if let Some(why) = skip {
        slate_testskip::skip(name, slate_testskip::Reason::Setup(&why));
        return;
    }
    let result = std::thread::spawn(move || {
        // SAFETY: unshare affects only this thread, which owns no netlink
        // socket yet.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
        ip(&["link", "set", "lo", "up"]);
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(body());
    })
    .join();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// `ip ARGS`, which must succeed; its output.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Straight to stderr: libtest captures `eprintln!` of passing tests, and a
/// skip must be visible.
pub fn skipped(test: &str, why: &str) {
    slate_testskip::skip(
        test,
        slate_testskip::Reason::Setup(&format!("{why} (needs root, ip, dnsmasq)")),
    );
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a command that must succeed.
pub fn run(args: &[&str]) {
    let status = Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(status.success(), "{args:?}: {status}");
}

/// A command's stdout; it must succeed.
pub fn output(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(out.status.success(), "{args:?}: {}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Namespaces and processes of one test; all of it goes away on drop, also
/// when an assertion failed.
pub struct Netns {
    names: Vec<String>,
    children: Vec<Child>,
    dnsmasq: Option<Child>,
    /// The server namespace and extra arguments, to start dnsmasq again.
    dnsmasq_args: (String, Vec<String>),
    dnsmasq_starts: usize,
    dir: tempfile::TempDir,
}

impl Netns {
    /// Namespaces `<tag>s` (server) and `<tag>c` (client) joined by veth
    /// `<tag>s` / `<tag>c`.
    pub fn new(tag: &str) -> Netns {
        let server = format!("{tag}s");
        let client = format!("{tag}c");
        let mut ns = Netns {
            names: Vec::new(),
            children: Vec::new(),
            dnsmasq: None,
            dnsmasq_args: (server.clone(), Vec::new()),
            dnsmasq_starts: 0,
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
    /// serving 10.99.0.0/24 on the server end, which also has fd00:99::1/64
    /// for DHCPv6 (`extra`: more dnsmasq arguments, e.g. a DHCPv6 range);
    /// returns the client link.
    pub fn with_dhcp_server(prefix: &str, extra: &[&str]) -> (Netns, String) {
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
        run(&[
            "ip",
            "-n",
            &server,
            "addr",
            "add",
            "fd00:99::1/64",
            "dev",
            &server,
            "nodad",
        ]);
        ns.dnsmasq_args = (server, extra.iter().map(|a| (*a).to_owned()).collect());
        ns.start_dnsmasq();
        (ns, client)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Publishes a machine config whose `machine.network` is `yaml`, where
    /// networkd reads it (machined's published config).
    pub fn write_network_config(&self, yaml: &str) {
        let mut config = slate_config::generate::generate(&slate_config::generate::Options {
            cluster_name: "netns".into(),
            endpoint: "https://10.0.0.1:6443".into(),
            ..Default::default()
        })
        .expect("generating a config")
        .worker;
        config.machine.network = slate_config::yaml::from_str(yaml).expect("network yaml");
        std::fs::create_dir_all(self.path("run")).unwrap();
        std::fs::write(
            self.path("run/machine-config.json"),
            config.to_json().unwrap(),
        )
        .unwrap();
    }

    /// Starts the `networkd` binary at `bin` in the client namespace with
    /// `cmdline` and a fake sysfs in which the veth looks like a NIC.
    pub fn start_networkd(&mut self, bin: &Path, client: &str, cmdline: &str) {
        std::fs::write(self.path("cmdline"), cmdline).unwrap();
        std::fs::create_dir_all(self.path(&format!("sys/class/net/{client}/device"))).unwrap();
        let log = File::create(self.path("networkd.log")).unwrap();
        let child = networkd_command(bin, client, self.dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting networkd");
        self.children.push(child);
    }

    /// Starts dnsmasq (again), appending to its log.
    pub fn start_dnsmasq(&mut self) {
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
        // Serving once it has logged its range (another time after a
        // restart): a client started before would lose its first DISCOVER.
        let started = |ns: &Netns| {
            std::fs::read_to_string(ns.path("dnsmasq.log"))
                .unwrap_or_default()
                .matches("DHCP, IP range")
                .count()
        };
        let before = self.dnsmasq_starts;
        let deadline = Instant::now() + Duration::from_secs(10);
        while started(self) <= before {
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not start\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        self.dnsmasq_starts += 1;
    }

    pub fn stop_dnsmasq(&mut self) {
        if let Some(mut child) = self.dnsmasq.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM to networkd (the first child started) and waits up to
    /// 10 s for it to exit; its exit status.
    pub fn terminate_networkd(&mut self) -> std::process::ExitStatus {
        let child = self.children.first_mut().expect("networkd was started");
        let pid = i32::try_from(child.id()).expect("a pid");
        // SAFETY: plain kill(2) on our own child (`ip netns exec` execs it).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("waiting for networkd") {
                return status;
            }
            assert!(Instant::now() < deadline, "networkd ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) for the ready file, the result networkd promises.
    pub fn wait_ready(&mut self) -> String {
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
            // Short: the startup benchmark measures with this.
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    pub fn logs(&self) -> String {
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

/// `networkd` at `bin` in namespace `ns`, everything it reads and writes
/// under `dir`: `cmdline`, `sys/`, `resolv.conf`, and under `run/` the
/// ready file, the published config (`run/machine-config.json`), the owned
/// addresses and the socket (`run/networkd.sock`). Logs at debug level.
pub fn networkd_command(bin: &Path, ns: &str, dir: &Path) -> Command {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", ns])
        .arg(bin)
        .env("SLATE_NETWORKD_CMDLINE", dir.join("cmdline"))
        .env("SLATE_NETWORKD_SYSFS", dir.join("sys"))
        .env("SLATE_NETWORKD_RESOLV_CONF", dir.join("resolv.conf"))
        .env("SLATE_NETWORKD_READY_FILE", dir.join("run/network.ready"))
        // Everything else networkd keeps under /run, in the test's dir.
        .env("SLATE_NETWORKD_CONFIG", dir.join("run/machine-config.json"))
        .env("SLATE_NETWORKD_OWNED_FILE", dir.join("run/networkd-owned"))
        .env("SLATE_NETWORKD_SOCKET", dir.join("run/networkd.sock"))
        // `ip netns exec` shares the host's UTS namespace.
        .env("SLATE_NETWORKD_SET_HOSTNAME", "0")
        // The namespace shares the host's clock: never set it.
        .env("SLATE_NETWORKD_SYNC_TIME", "0")
        .env("SLATE_LOG", "debug");
    command
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

/// Bare namespaces (no dnsmasq, no networkd) for tests that wire their
/// own topology; each is deleted on drop, with the links inside it.
#[derive(Default)]
pub struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds namespace `name` (a leftover of an aborted run is replaced),
    /// with `lo` up.
    pub fn add(&mut self, name: &str) {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        run(&["ip", "netns", "add", name]);
        self.names.push(name.to_owned());
        run(&["ip", "-n", name, "link", "set", "lo", "up"]);
    }

    /// A veth pair `a_if` in `a` with `a_addr`, `b_if` in `b` with
    /// `b_addr` (CIDR), both up.
    pub fn veth(
        &self,
        (a, a_if, a_addr): (&str, &str, &str),
        (b, b_if, b_addr): (&str, &str, &str),
    ) {
        self.link((a, a_if), (b, b_if));
        for (ns, ifname, addr) in [(a, a_if, a_addr), (b, b_if, b_addr)] {
            run(&["ip", "-n", ns, "addr", "add", addr, "dev", ifname]);
        }
    }

    /// A veth pair `a_if` in `a`, `b_if` in `b`, both up, no addresses
    /// (e.g. a bridge port).
    pub fn link(&self, (a, a_if): (&str, &str), (b, b_if): (&str, &str)) {
        run(&[
            "ip", "link", "add", a_if, "netns", a, "type", "veth", "peer", "name", b_if, "netns", b,
        ]);
        for (ns, ifname) in [(a, a_if), (b, b_if)] {
            run(&["ip", "-n", ns, "link", "set", ifname, "up"]);
        }
    }
}

/// Runs `args` in namespace `ns`; it must succeed.
pub fn exec(ns: &str, args: &[&str]) {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    run(&all);
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Moves the calling thread (only it) into namespace `name`: sockets it
/// creates from then on live there, also after it moves on.
pub fn enter(name: &str) -> std::io::Result<()> {
    let ns = File::open(Path::new("/run/netns").join(name))?;
    use std::os::fd::AsRawFd as _;
    // SAFETY: setns on a namespace fd we hold open; affects this thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
