//! A test-only misbehaving service, never in an image unless a test puts
//! it in an extension layer: it grows its memory (`--memory-mib N`, 4 MiB
//! at a time, every page touched) or its processes (`--children N`, each
//! a copy of itself that sleeps), printing how far it got, then sleeps.
//! The QEMU limits test runs it under `memory.max` and `pids.max` to see
//! the cgroup hold it.

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

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
