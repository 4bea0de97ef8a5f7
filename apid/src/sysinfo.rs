//! Facts about the running node, read from the kernel.

use std::path::Path;

use slate_proto::machine::Process;

pub use slate_common::host::hostname;

/// (kernel release, machine architecture) from uname.
pub fn kernel_and_arch() -> (String, String) {
    match nix::sys::utsname::uname() {
        Ok(u) => (
            u.release().to_string_lossy().into_owned(),
            u.machine().to_string_lossy().into_owned(),
        ),
        Err(_) => ("unknown".into(), std::env::consts::ARCH.into()),
    }
}

/// Milliseconds since the kernel started (CLOCK_BOOTTIME, which keeps
/// counting through suspend, like /proc/uptime).
pub fn uptime_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}

/// Boot time in seconds since the epoch: `btime` of /proc/stat.
pub fn boot_time_unix(proc_root: &Path) -> i64 {
    std::fs::read_to_string(proc_root.join("stat"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse().ok()))
        })
        .unwrap_or(0)
}

/// Every process under `proc_root`, sorted by pid. Processes that exit while
/// we read them are skipped.
pub fn processes(proc_root: &Path) -> Vec<Process> {
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut out: Vec<Process> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| process(&proc_root.join(pid.to_string()), pid))
        .collect();
    out.sort_by_key(|p| p.pid);
    out
}

fn process(dir: &Path, pid: i32) -> Option<Process> {
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    let field = |name: &str| {
        status.lines().find_map(|l| {
            l.strip_prefix(name)
                .and_then(|v| v.strip_prefix(':'))
                .map(str::trim)
        })
    };
    let kib = |v: &str| v.trim_end_matches("kB").trim().parse::<u64>().ok();
    // smaps_rollup walks the page tables; VmRSS in status comes from
    // per-thread counters that Linux 6.1 syncs lazily, and read 0 for an
    // idle PID 1 on a 2-vCPU node. Kernel threads have neither.
    let rss_kib = std::fs::read_to_string(dir.join("smaps_rollup"))
        .ok()
        .and_then(|rollup| {
            rollup
                .lines()
                .find_map(|l| l.strip_prefix("Rss:").and_then(kib))
        })
        .or_else(|| field("VmRSS").and_then(kib))
        .unwrap_or(0);
    let command = std::fs::read(dir.join("cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    Some(Process {
        pid,
        ppid: field("PPid").and_then(|v| v.parse().ok()).unwrap_or(0),
        name: field("Name").unwrap_or_default().to_owned(),
        command,
        rss_bytes: rss_kib * 1024,
        state: field("State")
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or("?")
            .to_owned(),
        // "Uid: real effective saved fs".
        uid: field("Uid")
            .and_then(|v| v.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        capabilities: field("CapEff")
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .map(slate_common::caps::names)
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_processes_and_boot_time_from_a_proc_tree() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join("stat"),
            "cpu  1 2 3\nbtime 1700000000\nprocesses 5\n",
        )
        .unwrap();
        let p = root.path().join("42");
        std::fs::create_dir(&p).unwrap();
        std::fs::write(
            p.join("status"),
            "Name:\tapid\nState:\tS (sleeping)\nPPid:\t1\nUid:\t0\t1000\t0\t0\n\
             CapEff:\t0000000000003000\nVmRSS:\t    5120 kB\n",
        )
        .unwrap();
        std::fs::write(p.join("cmdline"), b"/usr/bin/apid\0--flag\0").unwrap();
        // smaps_rollup, when present, wins over the lazily synced VmRSS.
        let q = root.path().join("43");
        std::fs::create_dir(&q).unwrap();
        std::fs::write(
            q.join("status"),
            "Name:\tinit\nState:\tS (sleeping)\nPPid:\t0\nVmRSS:\t       0 kB\n",
        )
        .unwrap();
        std::fs::write(
            q.join("smaps_rollup"),
            "00400000-7fff [rollup]\nRss:                1400 kB\nPss:    1000 kB\n",
        )
        .unwrap();
        let k = root.path().join("2");
        std::fs::create_dir(&k).unwrap();
        std::fs::write(
            k.join("status"),
            "Name:\tkthreadd\nState:\tS (sleeping)\nPPid:\t0\n",
        )
        .unwrap();
        std::fs::create_dir(root.path().join("self")).unwrap();

        assert_eq!(boot_time_unix(root.path()), 1_700_000_000);
        let procs = processes(root.path());
        assert_eq!(procs.len(), 3);
        assert_eq!((procs[2].pid, procs[2].rss_bytes), (43, 1400 * 1024));
        assert_eq!(
            (procs[0].pid, procs[0].rss_bytes, procs[0].name.as_str()),
            (2, 0, "kthreadd")
        );
        let apid = &procs[1];
        assert_eq!((apid.pid, apid.ppid, apid.rss_bytes), (42, 1, 5120 * 1024));
        assert_eq!(
            (apid.command.as_str(), apid.state.as_str()),
            ("/usr/bin/apid --flag", "S")
        );
        assert_eq!(apid.uid, 1000, "the effective uid");
        assert_eq!(apid.capabilities, ["net_admin", "net_raw"]);
    }
}
