//! A test-only misbehaving service, never in an image unless a test puts
//! it in an extension layer: it grows its memory (`--memory-mib N`, 4 MiB
//! at a time, every page touched) or its processes (`--children N`, each
//! a copy of itself that sleeps), printing how far it got, then sleeps.
//! The QEMU limits test runs it under `memory.max` and `pids.max` to see
//! the cgroup hold it. With `--talk` it prints numbered lines without end
//! (`talk RUN SEQ xxx…`, RUN different at each start), for the test that
//! cuts the power while its log is written.

use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<usize>().ok())
    };
    if args.iter().any(|a| a == "--sleep") {
        sleep_forever();
    }
    if args.iter().any(|a| a == "--talk") {
        talk_forever();
    }
    if let Some(mib) = value("--memory-mib") {
        let mut held: Vec<Vec<u8>> = Vec::new();
        for step in 1..=mib.div_ceil(4) {
            // Non-zero bytes: every page is really touched and kept.
            held.push(vec![0x5a; 4 << 20]);
            println!("holding {} MiB", step * 4);
            std::thread::sleep(Duration::from_millis(20));
        }
        println!("held all {mib} MiB");
    }
    if let Some(n) = value("--children") {
        let me = std::env::current_exe().expect("own path");
        let mut started = Vec::new();
        for i in 1..=n {
            match std::process::Command::new(&me).arg("--sleep").spawn() {
                Ok(child) => started.push(child),
                Err(e) => {
                    println!("spawned {} of {n} children: {e}", i - 1);
                    break;
                }
            }
        }
        if started.len() == n {
            println!("spawned all {n} children");
        }
    }
    sleep_forever();
}

/// One line per millisecond, each a whole `println!` (one write to the
/// pipe), so a line seen torn was torn on the node's disk, not here.
fn talk_forever() -> ! {
    use std::io::Write as _;
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() ^ std::process::id());
    let filler = "x".repeat(120);
    let mut out = std::io::stdout().lock();
    for seq in 0u64.. {
        let line = format!("talk {run:08x} {seq} {filler}\n");
        if out
            .write_all(line.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    sleep_forever()
}

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
