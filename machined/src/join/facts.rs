//! What a registering node says of itself (`MachineFacts`), read from
//! /sys and /proc: enough for a person to tell which machine is waiting.

use std::path::Path;

use slate_proto::trust::MachineFacts;

/// The facts of this machine; `sys` is `/sys` (tests point it elsewhere).
pub fn gather(sys: &Path) -> MachineFacts {
    let read = |p: &Path| std::fs::read_to_string(p).map(|s| s.trim().to_owned());
    MachineFacts {
        uuid: read(&sys.join("class/dmi/id/product_uuid")).unwrap_or_default(),
        hostname: slate_common::host::hostname(),
        macs: macs(&sys.join("class/net")),
        addresses: slate_common::host::addresses()
            .into_iter()
            .filter(|ip| !ip.is_loopback())
            .map(|ip| ip.to_string())
            .collect(),
        disks: disks(&sys.join("block")),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get() as u32),
        memory_bytes: memory_bytes(),
    }
}

fn sorted_entries(dir: &Path) -> Vec<(String, std::path::PathBuf)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    out.sort();
    out
}

fn macs(net: &Path) -> Vec<String> {
    sorted_entries(net)
        .into_iter()
        .filter(|(name, _)| name != "lo")
        .filter_map(|(name, path)| {
            let mac = std::fs::read_to_string(path.join("address")).ok()?;
            let mac = mac.trim();
            (!mac.is_empty() && mac != "00:00:00:00:00:00").then(|| format!("{name} {mac}"))
        })
        .collect()
}

/// Whole disks: not partitions, loop devices, RAM disks or CD drives.
fn disks(block: &Path) -> Vec<String> {
    sorted_entries(block)
        .into_iter()
        .filter(|(name, _)| {
            !["loop", "ram", "sr", "zram", "dm-"]
                .iter()
                .any(|p| name.starts_with(p))
        })
        .filter_map(|(name, path)| {
            let sectors: u64 = std::fs::read_to_string(path.join("size"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            (sectors > 0).then(|| format!("{name} {}", human_bytes(sectors * 512)))
        })
        .collect()
}

fn memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// `8.0 GiB`, `512 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_and_macs_are_read_from_sys() {
        let sys = tempfile::tempdir().unwrap();
        for (name, size) in [
            ("vda", "16777216"),
            ("vda1", "2048"),
            ("loop0", "100"),
            ("sr0", "10"),
        ] {
            let dir = sys.path().join("block").join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("size"), size).unwrap();
        }
        for (name, mac) in [("lo", "00:00:00:00:00:00"), ("eth0", "52:54:00:12:34:56")] {
            let dir = sys.path().join("class/net").join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("address"), format!("{mac}\n")).unwrap();
        }
        let facts = gather(sys.path());
        // vda1 is listed by /sys/block only as vda's child on a real
        // system; here it stands for a stray entry and is a "disk".
        assert!(
            facts.disks.contains(&"vda 8.0 GiB".to_owned()),
            "{:?}",
            facts.disks
        );
        assert!(
            !facts
                .disks
                .iter()
                .any(|d| d.starts_with("loop") || d.starts_with("sr"))
        );
        assert_eq!(facts.macs, vec!["eth0 52:54:00:12:34:56".to_owned()]);
        assert_eq!(facts.uuid, "");
    }
}
