//! `make bench`, API balancer part (root, network namespaces): three
//! stand-in API servers ([`crate::apiservers`]) reached from a client
//! namespace (a) directly, round robin over the three, (b) through Slate's
//! balancer (the library, on one thread as in networkd), (c) through
//! Debian's haproxy in TCP mode with the same health check (`GET /readyz`
//! over TLS every 500 ms), one thread as well, measured in the same run.
//! Each figure is one client request: TCP connect, TLS handshake (verified
//! end to end), `GET`, the answer; and a `GET` on a connection kept open,
//! which isolates what the splice adds per round trip.
//! What it shows: the balancer's added latency (target: p99 ≤ 200 µs over
//! direct) and that it is no worse than haproxy.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use comfy_table::{Table, presets::ASCII_MARKDOWN};
use slate_balancer::Settings;

use crate::apiservers::{self, Conn, Lab};
use crate::bench::percentile;
use crate::netns;

/// Requests per mode and round, on new connections and on one open one.
const NEW_CONN: usize = 500;
const KEPT: usize = 1000;
/// Rounds through the three modes, interleaved so drift hits all alike.
const ROUNDS: usize = 2;
/// Concurrent clients and how long for the requests/s figure.
const CLIENTS: usize = 4;
const LOAD_TIME: Duration = Duration::from_secs(2);
const HAPROXY_PORT: u16 = 17450;

#[derive(Default)]
struct Figures {
    new_conn: Vec<Duration>,
    kept: Vec<Duration>,
    per_second: Vec<f64>,
    errors: usize,
}

fn us(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

/// One mode's destination: where request `i` goes.
type Route = Arc<dyn Fn(usize) -> SocketAddr + Send + Sync>;

/// One round over all modes. Latencies are taken one request per mode in
/// turn, so the noise of a shared machine falls on every mode alike.
fn measure(modes: &[(String, Route)], tls: &Arc<rustls::ClientConfig>, figures: &mut [Figures]) {
    for i in 0..NEW_CONN {
        for ((_, route), f) in modes.iter().zip(figures.iter_mut()) {
            let start = Instant::now();
            match apiservers::request(route(i), tls) {
                Ok(_) => f.new_conn.push(start.elapsed()),
                Err(_) => f.errors += 1,
            }
        }
    }
    let mut conns: Vec<Option<Conn>> = modes
        .iter()
        .map(|(_, route)| Conn::open(route(0), tls).ok())
        .collect();
    for _ in 0..KEPT {
        for (conn, f) in conns.iter_mut().zip(figures.iter_mut()) {
            let start = Instant::now();
            match conn.as_mut().map(|c| c.get("/who")) {
                Some(Ok(_)) => f.kept.push(start.elapsed()),
                _ => f.errors += 1,
            }
        }
    }
    drop(conns);
    for ((_, route), f) in modes.iter().zip(figures.iter_mut()) {
        f.per_second.push(load(route, tls));
    }
}

/// Requests/s with CLIENTS at once, each request on a new connection.
fn load(route: &Route, tls: &Arc<rustls::ClientConfig>) -> f64 {
    let deadline = Instant::now() + LOAD_TIME;
    // New threads start in this thread's (the client) namespace.
    let done: usize = (0..CLIENTS)
        .map(|c| {
            let (route, tls) = (route.clone(), tls.clone());
            std::thread::spawn(move || {
                let mut done = 0;
                let mut i = c;
                while Instant::now() < deadline {
                    if apiservers::request(route(i), &tls).is_ok() {
                        done += 1;
                    }
                    i += CLIENTS;
                }
                done
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap_or(0))
        .sum();
    done as f64 / LOAD_TIME.as_secs_f64()
}

/// haproxy in the client namespace; killed on drop.
struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn haproxy_path() -> Option<&'static str> {
    ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

fn start_haproxy(lab: &Lab, dir: &std::path::Path) -> anyhow::Result<Haproxy> {
    let bin = haproxy_path().context("haproxy not installed")?;
    let mut cfg = format!(
        "global\n    nbthread 1\n    maxconn 4096\n\
         defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1h\n    timeout server 1h\n\
         frontend api\n    bind 127.0.0.1:{HAPROXY_PORT}\n    default_backend apiservers\n\
         backend apiservers\n    balance roundrobin\n    option httpchk GET /readyz\n"
    );
    for (i, b) in lab.backends.iter().enumerate() {
        cfg.push_str(&format!(
            "    server b{i} {} check check-ssl verify none inter 500ms fall 1 rise 1\n",
            b.addr
        ));
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg)?;
    let log = std::fs::File::create(dir.join("haproxy.log"))?;
    let child = Command::new("ip")
        .args(["netns", "exec", &lab.client_ns, bin, "-db", "-f"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting haproxy")?;
    let mut h = Haproxy(child);
    let addr = SocketAddr::from(([127, 0, 0, 1], HAPROXY_PORT));
    let deadline = Instant::now() + Duration::from_secs(10);
    while apiservers::request(addr, &lab.client_tls).is_err() {
        if let Ok(Some(status)) = h.0.try_wait() {
            bail!(
                "haproxy exited ({status}): {}",
                std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default()
            );
        }
        anyhow::ensure!(Instant::now() < deadline, "haproxy did not answer in 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(h)
}

/// Each mode's figures, and a note when a mode could not run.
struct Results {
    rows: Vec<(String, Figures)>,
    note: Option<String>,
}

fn bench() -> anyhow::Result<Results> {
    let lab = Lab::new("sbb", 3);
    let balancer = lab.start_balancer(Settings::default());
    netns::enter(&lab.client_ns)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while balancer.balancer.status().healthy != "3/3" {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the balancer's endpoints not healthy"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let dir = tempfile::tempdir()?;
    let (haproxy, note) = match start_haproxy(&lab, dir.path()) {
        Ok(h) => (Some(h), None),
        Err(e) => (None, Some(format!("haproxy column skipped: {e:#}"))),
    };
    let backends: Vec<SocketAddr> = lab.backends.iter().map(|b| b.addr).collect();
    let balancer_addr = balancer.addr;
    let mut modes: Vec<(String, Route)> = vec![
        (
            "direct (round robin)".into(),
            Arc::new(move |i| backends[i % backends.len()]),
        ),
        ("Slate balancer".into(), Arc::new(move |_| balancer_addr)),
    ];
    if haproxy.is_some() {
        modes.push((
            "haproxy (tcp, 1 thread)".into(),
            Arc::new(|_| SocketAddr::from(([127, 0, 0, 1], HAPROXY_PORT))),
        ));
    }
    let mut figures: Vec<Figures> = modes.iter().map(|_| Figures::default()).collect();
    for _ in 0..ROUNDS {
        measure(&modes, &lab.client_tls, &mut figures);
    }
    drop(haproxy);
    Ok(Results {
        rows: modes.into_iter().map(|(n, _)| n).zip(figures).collect(),
        note,
    })
}

/// Prints the tables, or why they could not be made.
pub fn run() {
    if let Some(why) = apiservers::skip_reason() {
        println!("\nAPI balancer benchmark skipped: {why}");
        return;
    }
    // A thread of its own: it moves into the client namespace.
    let result = std::thread::spawn(bench)
        .join()
        .map_err(|_| anyhow::anyhow!("the benchmark thread panicked"))
        .and_then(|r| r);
    let Results { rows, note } = match result {
        Ok(r) => r,
        Err(e) => {
            println!("\nAPI balancer benchmark failed: {e:#}");
            return;
        }
    };
    let mut t = Table::new();
    t.load_style(ASCII_MARKDOWN).set_header(vec![
        "API balancer, 3 backends (µs)".to_owned(),
        "new conn p50".into(),
        "new conn p99".into(),
        "open conn p50".into(),
        "open conn p99".into(),
        format!("req/s ({CLIENTS} clients, new conns)"),
        "errors".into(),
    ]);
    for (name, f) in &rows {
        let rps = f.per_second.iter().sum::<f64>() / f.per_second.len().max(1) as f64;
        t.add_row(vec![
            name.clone(),
            us(percentile(&f.new_conn, 50)),
            us(percentile(&f.new_conn, 99)),
            us(percentile(&f.kept, 50)),
            us(percentile(&f.kept, 99)),
            format!("{rps:.0}"),
            f.errors.to_string(),
        ]);
    }
    println!("\n{t}");
    let find = |prefix: &str| {
        rows.iter()
            .find(|(n, _)| n.starts_with(prefix))
            .map(|(_, f)| f)
    };
    let (Some(direct), Some(slate)) = (find("direct"), find("Slate")) else {
        return;
    };
    let over = |a: &[Duration], b: &[Duration], p| {
        percentile(a, p).as_secs_f64() * 1e6 - percentile(b, p).as_secs_f64() * 1e6
    };
    let mut r = Table::new();
    r.load_style(ASCII_MARKDOWN)
        .set_header(vec!["comparison (same run)", "value", "target"]);
    r.add_row(vec![
        "balancer − direct, new conn p50 (µs)".to_owned(),
        format!("{:+.0}", over(&slate.new_conn, &direct.new_conn, 50)),
        "-".into(),
    ]);
    r.add_row(vec![
        "balancer − direct, new conn p99 (µs)".to_owned(),
        format!("{:+.0}", over(&slate.new_conn, &direct.new_conn, 99)),
        "≤ 200".into(),
    ]);
    r.add_row(vec![
        "balancer − direct, open conn p99 (µs)".to_owned(),
        format!("{:+.0}", over(&slate.kept, &direct.kept, 99)),
        "≤ 200".into(),
    ]);
    if let Some(haproxy) = find("haproxy") {
        let ratio = |a: &[Duration], b: &[Duration], p| {
            percentile(a, p).as_secs_f64() / percentile(b, p).as_secs_f64()
        };
        r.add_row(vec![
            "balancer / haproxy, new conn p99".to_owned(),
            format!("{:.2}", ratio(&slate.new_conn, &haproxy.new_conn, 99)),
            "≤ 1".into(),
        ]);
        r.add_row(vec![
            "balancer / haproxy, open conn p99".to_owned(),
            format!("{:.2}", ratio(&slate.kept, &haproxy.kept, 99)),
            "≤ 1".into(),
        ]);
        let rps = |f: &Figures| f.per_second.iter().sum::<f64>() / f.per_second.len().max(1) as f64;
        r.add_row(vec![
            "balancer / haproxy, req/s".to_owned(),
            format!("{:.2}", rps(slate) / rps(haproxy)),
            "≥ 1".into(),
        ]);
    }
    println!("\n{r}");
    if let Some(note) = note {
        println!("note: {note} (`make deps` installs it)");
    }
}
