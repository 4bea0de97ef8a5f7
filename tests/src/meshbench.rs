//! `make bench`, mesh part (root, network namespaces, iperf3): networkd's
//! userspace WireGuard mesh against the plain veth it runs over, side by
//! side in one run. Two namespaces joined by a veth (MTU 1500) with a
//! mesh node in each ([`crate::meshnode`]: the device runs on a thread of
//! this process), an iperf3 server in B. From A:
//! - throughput: `iperf3 -c` (TCP, 5 s) to B's veth address and to B's
//!   mesh address (through A's TUN, boringtun, UDP over the same veth,
//!   B's device and TUN), interleaved over rounds so the noise of a shared
//!   machine falls on both alike; the median round;
//! - latency: round trips of one byte over a TCP connection (nodelay) of
//!   our own, one on each path, taken one trip per path in turn. TCP
//!   rather than iperf3's UDP mode: UDP gives jitter and loss at a set
//!   rate, not a round trip, and `ping` is not installed here;
//! - the CPU this process used during each iperf3 run: on the mesh path,
//!   that is both mesh devices (userspace crypto and the TUN / UDP
//!   syscalls), the cost a node pays per Gbit/s;
//! - why, if the mesh is slow: the sender's TCP retransmits (iperf3) and
//!   UDP datagrams the kernel dropped for a full receive buffer in either
//!   namespace (the device reading too slowly), per path.
//!
//! The target: mesh ≥ 50% of plain veth throughput on 2 cores.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use comfy_table::{Table, presets::ASCII_MARKDOWN};

use crate::bench::{cpu, median, percentile};
use crate::meshnode::{self, B_UNDERLAY, Lab};
use crate::netns;

/// iperf3 runs per path, interleaved, and the length of each.
const ROUNDS: usize = 3;
const SECONDS: u32 = 5;
/// Timed round trips per path, after some untimed ones (the first mesh
/// packet waits for the handshake).
const ROUND_TRIPS: usize = 2000;
const WARM_UP: usize = 50;
const IPERF_PORT: u16 = 5201;
/// The target: mesh throughput at least this share of the veth's.
const TARGET: f64 = 0.5;

/// Why the benchmark cannot run here, if it cannot.
fn skip_reason() -> Option<String> {
    if let Some(why) = meshnode::skip_reason() {
        return Some(why.into());
    }
    for tool in ["ip", "iperf3"] {
        let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(tool).exists());
        if !found {
            return Some(format!("{tool} not installed (`make deps`)"));
        }
    }
    None
}

/// `iperf3 -s` in a namespace, killed on drop.
struct Iperf3Server(Child);

impl Iperf3Server {
    /// Starts it and waits until it listens (it says so on stdout).
    fn start(ns: &str) -> anyhow::Result<Self> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "iperf3", "-s", "--forceflush", "-p"])
            .arg(IPERF_PORT.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 -s")?;
        let stdout = child.stdout.take().context("iperf3's stdout")?;
        let server = Iperf3Server(child);
        let (tx, rx) = mpsc::channel();
        // A thread, so that a silent iperf3 cannot hang the benchmark; it
        // keeps draining stdout after the line, so iperf3 never blocks.
        std::thread::spawn(move || {
            let mut told = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !told && line.contains("Server listening") {
                    let _ = tx.send(());
                    told = true;
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(10))
            .map_err(|_| anyhow!("iperf3 -s did not report listening within 10 s"))?;
        Ok(server)
    }
}

impl Drop for Iperf3Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One iperf3 run: what arrived, this process's CPU meanwhile, and the
/// losses on the way.
struct Run {
    bits_per_second: f64,
    cpu_share: f64,
    retransmits: u64,
    udp_drops: u64,
}

/// UDP datagrams dropped for a full receive buffer in namespaces `ns`
/// (`RcvbufErrors` of `/proc/net/snmp`, which is per namespace).
fn udp_drops(ns: &[&str]) -> anyhow::Result<u64> {
    let mut sum = 0;
    for ns in ns {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "cat", "/proc/net/snmp"])
            .output()
            .context("reading /proc/net/snmp")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
        let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
            bail!("no Udp lines in {ns}'s /proc/net/snmp");
        };
        let value = names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == "RcvbufErrors")
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .with_context(|| format!("no Udp RcvbufErrors in {ns}"))?;
        sum += value;
    }
    Ok(sum)
}

/// `iperf3 -c to -t SECONDS -J` from namespace `from`; UDP drops are
/// counted in `both` namespaces.
fn iperf3(from: &str, to: IpAddr, both: &[&str]) -> anyhow::Result<Run> {
    let drops_before = udp_drops(both)?;
    let (cpu_before, start) = (cpu(), Instant::now());
    let out = Command::new("ip")
        .args(["netns", "exec", from, "iperf3", "-J", "-c"])
        .arg(to.to_string())
        .args(["-p", &IPERF_PORT.to_string(), "-t", &SECONDS.to_string()])
        .output()
        .context("running iperf3 -c")?;
    let cpu_share = (cpu() - cpu_before).as_secs_f64() / start.elapsed().as_secs_f64();
    let udp_drops = udp_drops(both)? - drops_before;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "iperf3 -c {to} ({}): no JSON; stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if let Some(e) = json.get("error") {
        bail!("iperf3 -c {to}: {e}");
    }
    let bits_per_second = json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .with_context(|| format!("iperf3 -c {to}: no end.sum_received.bits_per_second"))?;
    let retransmits = json["end"]["sum_sent"]["retransmits"]
        .as_u64()
        .with_context(|| format!("iperf3 -c {to}: no end.sum_sent.retransmits"))?;
    Ok(Run {
        bits_per_second,
        cpu_share,
        retransmits,
        udp_drops,
    })
}

/// Echoes single bytes on each of `connections` accepted connections
/// (a thread each) until the client closes them; in namespace `ns`.
fn echo_server(ns: &str, connections: usize) -> anyhow::Result<u16> {
    let (port_tx, port_rx) = mpsc::channel();
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        let listen = || -> anyhow::Result<TcpListener> {
            netns::enter(&ns).with_context(|| format!("entering {ns}"))?;
            // Dual-stack: the veth's IPv4 and the mesh's IPv6 address.
            let l = TcpListener::bind((Ipv6Addr::UNSPECIFIED, 0)).context("listening")?;
            l.set_nonblocking(true)?;
            Ok(l)
        };
        let l = match listen() {
            Ok(l) => l,
            Err(e) => return drop(port_tx.send(Err(e))),
        };
        let _ = port_tx.send(l.local_addr().map(|a| a.port()).map_err(Into::into));
        // Bounded: a client that never connects must not leave this
        // thread behind forever.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut accepted = 0;
        while accepted < connections && Instant::now() < deadline {
            match l.accept() {
                Ok((c, _)) => {
                    accepted += 1;
                    std::thread::spawn(move || echo(c));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    port_rx.recv().context("the echo server's thread")?
}

fn echo(mut c: TcpStream) {
    let _ = c.set_nonblocking(false);
    let _ = c.set_nodelay(true);
    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
    let mut b = [0u8; 1];
    while matches!(c.read(&mut b), Ok(1)) && c.write_all(&b).is_ok() {}
}

fn round_trip(c: &mut TcpStream) -> anyhow::Result<Duration> {
    let start = Instant::now();
    c.write_all(b"x")?;
    let mut b = [0u8; 1];
    c.read_exact(&mut b)?;
    Ok(start.elapsed())
}

/// `ROUND_TRIPS` one-byte round trips from namespace `from` to each of
/// `to` (one connection each), one per address in turn.
fn round_trips(from: &str, to: Vec<SocketAddr>) -> anyhow::Result<Vec<Vec<Duration>>> {
    let from = from.to_owned();
    std::thread::spawn(move || -> anyhow::Result<Vec<Vec<Duration>>> {
        netns::enter(&from).with_context(|| format!("entering {from}"))?;
        let mut conns = to
            .iter()
            .map(|a| -> anyhow::Result<TcpStream> {
                let c = TcpStream::connect_timeout(a, Duration::from_secs(10))
                    .with_context(|| format!("connecting to {a}"))?;
                c.set_nodelay(true)?;
                c.set_read_timeout(Some(Duration::from_secs(5)))?;
                Ok(c)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut times = vec![Vec::with_capacity(ROUND_TRIPS); conns.len()];
        for i in 0..WARM_UP + ROUND_TRIPS {
            for (c, t) in conns.iter_mut().zip(&mut times) {
                let d = round_trip(c).context("a round trip")?;
                if i >= WARM_UP {
                    t.push(d);
                }
            }
        }
        Ok(times)
    })
    .join()
    .map_err(|_| anyhow!("the round-trip thread panicked"))?
}

struct Figures {
    gbits: f64,
    cpu_share: f64,
    retransmits: u64,
    udp_drops: u64,
    trips: Vec<Duration>,
}

/// Both paths measured in one lab: `[veth, mesh]`.
fn measure() -> anyhow::Result<[Figures; 2]> {
    let lab = Lab::new("mb")?;
    let targets: [IpAddr; 2] = [
        B_UNDERLAY.parse().expect("an IPv4 address"),
        IpAddr::V6(lab.b.address),
    ];
    let port = echo_server(&lab.b_ns, targets.len())?;
    let trips = round_trips(
        &lab.a_ns,
        targets
            .iter()
            .map(|&ip| SocketAddr::new(ip, port))
            .collect(),
    )?;
    let _server = Iperf3Server::start(&lab.b_ns)?;
    let mut runs: [Vec<Run>; 2] = Default::default();
    for round in 0..ROUNDS {
        for (to, runs) in targets.iter().zip(&mut runs) {
            let run = iperf3(&lab.a_ns, *to, &[&lab.a_ns, &lab.b_ns])?;
            eprintln!(
                "mesh bench round {}/{ROUNDS}: {to}: {:.2} Gbit/s",
                round + 1,
                run.bits_per_second / 1e9
            );
            runs.push(run);
        }
    }
    anyhow::ensure!(
        lab.a.running() && lab.b.running(),
        "a mesh device stopped during the benchmark"
    );
    let mut paths = runs.into_iter().zip(trips).map(|(runs, trips)| Figures {
        gbits: median(runs.iter().map(|r| r.bits_per_second / 1e9).collect()),
        cpu_share: median(runs.iter().map(|r| r.cpu_share).collect()),
        retransmits: runs.iter().map(|r| r.retransmits).sum(),
        udp_drops: runs.iter().map(|r| r.udp_drops).sum(),
        trips,
    });
    match (paths.next(), paths.next()) {
        (Some(first), Some(second)) => Ok([first, second]),
        _ => bail!("the benchmark measured fewer than two paths"),
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn table([veth, mesh]: &[Figures; 2]) -> Table {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut t = Table::new();
    t.load_style(ASCII_MARKDOWN).set_header(vec![
        format!("mesh vs. plain veth ({cores} cores, one run)"),
        "veth".into(),
        "mesh".into(),
        "mesh/veth".into(),
    ]);
    t.add_row(vec![
        format!("TCP throughput, iperf3 {SECONDS} s, median of {ROUNDS} (Gbit/s)"),
        format!("{:.2}", veth.gbits),
        format!("{:.2}", mesh.gbits),
        format!("{:.2}", mesh.gbits / veth.gbits),
    ]);
    for p in [50, 99] {
        let (v, m) = (
            us(percentile(&veth.trips, p)),
            us(percentile(&mesh.trips, p)),
        );
        t.add_row(vec![
            format!("TCP 1-byte round trip p{p}, {ROUND_TRIPS} trips (µs)"),
            format!("{v:.0}"),
            format!("{m:.0}"),
            format!("{:.2}", m / v),
        ]);
    }
    t.add_row(vec![
        "this process's CPU during iperf3 (% of a core; mesh: both devices)".into(),
        format!("{:.0}", veth.cpu_share * 100.0),
        format!("{:.0}", mesh.cpu_share * 100.0),
        "-".into(),
    ]);
    t.add_row(vec![
        format!("TCP retransmits, iperf3 sender, sum of {ROUNDS} runs"),
        veth.retransmits.to_string(),
        mesh.retransmits.to_string(),
        "-".into(),
    ]);
    t.add_row(vec![
        format!("UDP datagrams dropped, receive buffer full, sum of {ROUNDS} runs"),
        veth.udp_drops.to_string(),
        mesh.udp_drops.to_string(),
        "-".into(),
    ]);
    t
}

/// Prints the table and the verdict on the target, or why not.
pub fn run() {
    if let Some(why) = skip_reason() {
        println!("\nmesh benchmark skipped: {why}");
        return;
    }
    // The namespace helpers panic on a failed `ip`; report it, and let
    // the other benchmarks run.
    let paths = match std::panic::catch_unwind(measure) {
        Ok(Ok(paths)) => paths,
        Ok(Err(e)) => return println!("\nmesh benchmark failed: {e:#}"),
        Err(_) => return println!("\nmesh benchmark failed: a namespace step panicked (above)"),
    };
    println!("\n{}", table(&paths));
    let ratio = paths[1].gbits / paths[0].gbits;
    println!(
        "target mesh ≥ {:.0}% of veth throughput: {} ({:.0}%; a shared machine: figures are noisy)",
        TARGET * 100.0,
        if ratio >= TARGET { "met" } else { "NOT met" },
        ratio * 100.0
    );
}
