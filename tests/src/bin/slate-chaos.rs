//! A test-only fault injector, never in an image unless a test puts it in
//! an extension layer (the fault-injection suite, `tests/tests/qemu_faults.rs`).
//! Run as an extension service on a booted node, it does from inside what
//! no API allows:
//!
//! 1. `--times N`: kills (SIGKILL) machined, networkd and apid N times each,
//!    one at a time; after each kill it waits for init to start a new one
//!    and for that one to serve (its socket or port accepts), and records
//!    how long that took. Killing machined kills this program too (machined
//!    clears a service's cgroup when it starts it again), so progress is
//!    kept in `--state` (on /run) and the next run carries on from there.
//! 2. `--flood-seconds S`: then throws junk at every listening port
//!    (50000, 3000 and 7445 over TCP, 51820 over UDP) for S seconds each,
//!    with the daemons' RSS read before and after.
//!
//! It prints one `chaos:` line per finding and a final `chaos done` line,
//! which the test reads through `slatectl logs`.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use slate_common::constants::{APID_PORT, DISCOVERY_PORT, MACHINED_SOCKET, NETWORKD_SOCKET};

/// The mesh's WireGuard port and the API balancer's, as the test's
/// config leaves them (their defaults).
const MESH_PORT: u16 = 51820;
const BALANCER_PORT: u16 = 7445;
/// How long a killed daemon may take to be back and serving.
const BACK_WITHIN: Duration = Duration::from_secs(60);

struct Target {
    /// The daemon's `comm`: its executable's name.
    name: &'static str,
    ready: fn() -> bool,
}

const TARGETS: &[Target] = &[
    Target {
        name: "machined",
        ready: || UnixStream::connect(MACHINED_SOCKET).is_ok(),
    },
    Target {
        name: "networkd",
        ready: || UnixStream::connect(NETWORKD_SOCKET).is_ok(),
    },
    Target {
        name: "apid",
        ready: || tcp_accepts(APID_PORT),
    },
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let times: u32 = value("--times").and_then(|v| v.parse().ok()).unwrap_or(0);
    let flood: u64 = value("--flood-seconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let state = PathBuf::from(value("--state").unwrap_or_else(|| "/run/slate-chaos".into()));
    if let Err(e) = std::fs::create_dir_all(&state) {
        say(&format!("cannot make {}: {e}", state.display()));
        std::process::exit(1);
    }
    let mut failed = false;
    for target in TARGETS {
        failed |= !kill_loop(target, times, &state);
    }
    if flood > 0 && !state.join("flooded").exists() {
        failed |= !flood_all(Duration::from_secs(flood));
        let _ = std::fs::write(state.join("flooded"), b"");
    }
    say(&format!(
        "done{}",
        if failed { " with failures" } else { "" }
    ));
    // Stay: a service that exits is started again by some policies, and a
    // second run would find everything done and print the same lines.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Prints a finding. A write error is ignored: when machined dies, the
/// pipe to its log goes with it, and this program is killed next anyway.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "chaos: {line}");
    let _ = out.flush();
}

/// Milliseconds on CLOCK_MONOTONIC: the same clock for every process of a
/// boot, so a kill recorded by one run is timed by the next.
fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Writes `text` to `path` atomically, so a run killed mid-write leaves
/// the previous record.
fn record(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

/// One line of `/proc/PID/stat`: the fields this program reads.
struct Stat {
    pid: u32,
    comm: String,
    state: String,
    ppid: u32,
}

/// Every process, from `/proc/PID/stat` (the command name is in
/// parentheses and may hold spaces, so the fields after it are split at
/// the last `)`).
fn processes() -> Vec<Stat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (head, rest) = stat.rsplit_once(") ")?;
            let (_, comm) = head.split_once(" (")?;
            let mut fields = rest.split_whitespace();
            Some(Stat {
                pid,
                comm: comm.to_owned(),
                state: fields.next()?.to_owned(),
                ppid: fields.next()?.parse().ok()?,
            })
        })
        .collect()
}

/// The pids of daemon `name`: init's children (a daemon's own child
/// between fork and exec has its name too) with that `comm`, zombies
/// excluded.
fn pids_of(name: &str) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|p| p.comm == name && p.state != "Z" && p.ppid == 1)
        .map(|p| p.pid)
        .collect()
}

/// Processes that stay in state Z (exited, not reaped) over two seconds,
/// as `pid (comm)`: one caught between its exit and its parent's wait is
/// not a leak.
fn zombies() -> Vec<String> {
    let mut left = zombies_now();
    for _ in 0..2 {
        std::thread::sleep(Duration::from_secs(1));
        let now = zombies_now();
        left.retain(|z| now.contains(z));
    }
    left
}

fn zombies_now() -> Vec<String> {
    processes()
        .into_iter()
        .filter(|p| p.state == "Z")
        .map(|p| format!("{} ({})", p.pid, p.comm))
        .collect()
}

fn tcp_accepts(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )
    .is_ok()
}

/// Kills `target` until `times` kills are recorded in `state`; whether
/// each one came back in time.
fn kill_loop(target: &Target, times: u32, state: &Path) -> bool {
    let file = state.join(target.name);
    // "done in-flight-kill-ms slowest-ms total-ms"; in-flight is 0 when no
    // kill awaits its restart.
    let saved = std::fs::read_to_string(&file).unwrap_or_default();
    let mut f = saved
        .split_whitespace()
        .filter_map(|v| v.parse::<u64>().ok());
    let (mut done, mut pending, mut slowest, mut total) = (
        f.next().unwrap_or(0),
        f.next().unwrap_or(0),
        f.next().unwrap_or(0),
        f.next().unwrap_or(0),
    );
    let mut ok = true;
    while done < u64::from(times) || pending != 0 {
        if pending != 0 {
            let deadline = Instant::now() + BACK_WITHIN;
            while Instant::now() < deadline
                && !(pids_of(target.name).len() == 1 && (target.ready)())
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            let took = now_ms().saturating_sub(pending);
            if pids_of(target.name).len() != 1 || !(target.ready)() {
                say(&format!(
                    "{} not back {} ms after kill {}",
                    target.name,
                    took,
                    done + 1
                ));
                return false;
            }
            done += 1;
            pending = 0;
            slowest = slowest.max(took);
            total += took;
            record(&file, &format!("{done} 0 {slowest} {total}"));
            // A moment of service between kills, for clients outside.
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        let pids = pids_of(target.name);
        let [pid] = pids[..] else {
            say(&format!(
                "{} runs as {pids:?}, not one process",
                target.name
            ));
            ok = false;
            break;
        };
        // Recorded before the kill: killing machined kills this run too.
        pending = now_ms();
        record(&file, &format!("{done} {pending} {slowest} {total}"));
        // SAFETY: kill(2) on a pid read from /proc.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        // Gone before the wait for its successor starts.
        let gone = Instant::now() + Duration::from_secs(10);
        while Instant::now() < gone && pids_of(target.name).contains(&pid) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let z = zombies();
    say(&format!(
        "{} killed {done} times, back and serving after each: slowest {slowest} ms, mean {} ms; zombies now: {}",
        target.name,
        total.checked_div(done).unwrap_or(0),
        if z.is_empty() {
            "none".to_owned()
        } else {
            z.join(", ")
        }
    ));
    ok && z.is_empty()
}

/// VmRSS of `name` in KiB.
fn rss_kib(name: &str) -> Option<u64> {
    let pid = *pids_of(name).first()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// xorshift64: junk needs no better randomness, and a dependency for it
/// would be one more crate in the test build.
struct Junk(u64);

impl Junk {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = self.0 as u8;
        }
    }
    fn below(&mut self, n: u64) -> u64 {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        u64::from_ne_bytes(b) % n.max(1)
    }
}

/// Whether UDP `port` has a socket bound (any address), from /proc/net/udp.
fn udp_bound(port: u16) -> bool {
    let hex = format!(":{port:04X}");
    ["/proc/net/udp", "/proc/net/udp6"].iter().any(|f| {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|a| a.ends_with(&hex))
            })
    })
}

fn flood_all(each: Duration) -> bool {
    let rss = || {
        TARGETS
            .iter()
            .map(|t| (t.name, rss_kib(t.name)))
            .collect::<Vec<_>>()
    };
    // Settled after the kill loop's last restart.
    std::thread::sleep(Duration::from_secs(3));
    let before = rss();
    let mut ok = true;
    for port in [APID_PORT, DISCOVERY_PORT, BALANCER_PORT] {
        if !tcp_accepts(port) {
            say(&format!("tcp {port} is not listening"));
            ok = false;
            continue;
        }
        let sent = flood_tcp(port, each);
        let after = tcp_accepts(port);
        say(&format!(
            "tcp {port}: {sent} junk connections, accepting after: {after}"
        ));
        ok &= after;
    }
    if udp_bound(MESH_PORT) {
        let sent = flood_udp(MESH_PORT, each);
        say(&format!(
            "udp {MESH_PORT}: {sent} junk datagrams, still bound after: {}",
            udp_bound(MESH_PORT)
        ));
        ok &= udp_bound(MESH_PORT);
    } else {
        say(&format!("udp {MESH_PORT} is not bound"));
        ok = false;
    }
    std::thread::sleep(Duration::from_secs(2));
    let after = rss();
    for ((name, b), (_, a)) in before.iter().zip(&after) {
        match (b, a) {
            (Some(b), Some(a)) => say(&format!("rss {name} {b} KiB -> {a} KiB")),
            _ => {
                say(&format!("rss {name} unreadable: {b:?} -> {a:?}"));
                ok = false;
            }
        }
    }
    ok
}

/// Eight threads for `each`: connections that send 1 B–16 KiB of junk
/// (some starting as a TLS record or an HTTP request), wait 50 ms for an
/// answer and close; then a burst of 600 held open and silent at once
/// (more than apid's cap). Connections made.
fn flood_tcp(port: u16, each: Duration) -> u64 {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let end = Instant::now() + each;
    let workers: Vec<_> = (0..8u64)
        .map(|w| {
            std::thread::spawn(move || {
                let mut junk = Junk(0x9e37_79b9_7f4a_7c15 ^ ((w + 1) * u64::from(port)));
                let mut made = 0u64;
                let mut buf = vec![0u8; 16 * 1024];
                while Instant::now() < end {
                    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                    else {
                        continue;
                    };
                    made += 1;
                    let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
                    let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
                    let n = junk.below(buf.len() as u64) as usize + 1;
                    junk.fill(&mut buf[..n]);
                    // A TLS handshake record claiming 16 KiB, or an HTTP
                    // request line as a scanner sends, each then junk, and
                    // cut to the connection's length.
                    let head: &[u8] = match made % 4 {
                        0 => &[0x16, 0x03, 0x01, 0x40, 0x00],
                        1 => b"GET / HTTP/1.1\r\n",
                        _ => &[],
                    };
                    let cut = head.len().min(n);
                    buf[..cut].copy_from_slice(&head[..cut]);
                    let _ = s.write_all(&buf[..n]);
                    let _ = s.read(&mut buf);
                    let _ = s.shutdown(Shutdown::Both);
                }
                made
            })
        })
        .collect();
    let mut made: u64 = workers.into_iter().map(|w| w.join().unwrap_or(0)).sum();
    // Held open and silent, all at once, then dropped.
    let held: Vec<TcpStream> = (0..600)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok())
        .collect();
    made += held.len() as u64;
    std::thread::sleep(Duration::from_secs(2));
    drop(held);
    made
}

/// Datagrams of every size for `each`, a quarter shaped as WireGuard
/// messages (types 1–4 with their lengths). Datagrams sent.
fn flood_udp(port: u16, each: Duration) -> u64 {
    let Ok(sock) = UdpSocket::bind("127.0.0.1:0") else {
        return 0;
    };
    let mut junk = Junk(0x2545_f491_4f6c_dd1d);
    let mut buf = [0u8; 1500];
    let mut sent = 0u64;
    let end = Instant::now() + each;
    while Instant::now() < end {
        let n = match sent % 4 {
            0 => [148, 92, 64, 32][junk.below(4) as usize],
            _ => junk.below(buf.len() as u64) as usize + 1,
        };
        junk.fill(&mut buf[..n]);
        if sent.is_multiple_of(4) {
            buf[0] = 1 + junk.below(4) as u8;
            buf[1..4].fill(0);
        }
        if sock.send_to(&buf[..n], ("127.0.0.1", port)).is_ok() {
            sent += 1;
        }
    }
    sent
}
