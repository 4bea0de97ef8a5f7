//! The VM's serial console, captured to a file by QEMU.

use std::path::Path;

/// The first console line containing `needle`, if any yet.
pub fn find_line(path: &Path, needle: &str) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    String::from_utf8_lossy(&bytes)
        .lines()
        .find(|l| l.contains(needle))
        .map(|l| l.trim_end().to_owned())
}

/// Every console line containing `needle`.
pub fn count_lines(path: &Path, needle: &str) -> usize {
    std::fs::read(path)
        .map(|b| {
            String::from_utf8_lossy(&b)
                .lines()
                .filter(|l| l.contains(needle))
                .count()
        })
        .unwrap_or(0)
}

/// The last `n` lines, for failure reports.
pub fn tail(path: &Path, n: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Seconds since boot of a console line stamped `[    1.234567] ...`, as
/// the kernel, init and the daemons all write them.
pub fn timestamp(line: &str) -> Option<f64> {
    let start = line.find('[')?;
    let end = start + line[start..].find(']')?;
    line[start + 1..end].trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp("[    1.234567] init: stage 1"), Some(1.234567));
        assert_eq!(
            timestamp("[   12.500000]  INFO serving the API on 0.0.0.0:50000"),
            Some(12.5)
        );
        assert_eq!(timestamp("no stamp"), None);
    }
}
