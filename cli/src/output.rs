//! `-o table|yaml|json`: one way to print every listing.

use clap::ValueEnum;
use comfy_table::{Table, presets::NOTHING};
use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Yaml,
    Json,
}

/// Something that can be shown as table rows.
pub trait Rows {
    fn header() -> Vec<&'static str>;
    fn row(&self) -> Vec<String>;
}

pub fn print<T: Rows + Serialize>(format: Format, items: &[T]) -> anyhow::Result<()> {
    match format {
        Format::Table => {
            let mut table = Table::new();
            table.load_style(NOTHING).set_header(T::header());
            for item in items {
                table.add_row(item.row());
            }
            for column in table.column_iter_mut() {
                column.set_padding((0, 3));
            }
            // comfy-table pads the last column; trailing blanks only hurt diffs.
            for line in table.to_string().lines() {
                println!("{}", line.trim_end());
            }
        }
        Format::Json => println!("{}", serde_json::to_string_pretty(items)?),
        Format::Yaml => print!("{}", slate_config::yaml::to_string(&items)?),
    }
    Ok(())
}

/// Rows given as JSON objects (resources): the table shows `columns`
/// (header, field) after a NODE column; YAML and JSON show every field.
pub fn print_values(
    format: Format,
    columns: &[(&str, &str)],
    rows: &[serde_json::Value],
) -> anyhow::Result<()> {
    match format {
        Format::Table => {
            let mut table = Table::new();
            let header: Vec<&str> = std::iter::once("NODE")
                .chain(columns.iter().map(|(h, _)| *h))
                .collect();
            table.load_style(NOTHING).set_header(header);
            for row in rows {
                table.add_row(
                    std::iter::once(cell(&row["node"]))
                        .chain(columns.iter().map(|(_, k)| cell(&row[*k])))
                        .collect::<Vec<_>>(),
                );
            }
            for column in table.column_iter_mut() {
                column.set_padding((0, 3));
            }
            for line in table.to_string().lines() {
                println!("{}", line.trim_end());
            }
        }
        Format::Json => println!("{}", serde_json::to_string_pretty(rows)?),
        Format::Yaml => print!("{}", slate_config::yaml::to_string(&rows)?),
    }
    Ok(())
}

/// A JSON value as a table cell: strings bare, null as `-`.
pub fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "-".into(),
        serde_json::Value::String(s) => s.clone(),
        // A list reads as `a,b` in a table cell; empty as `-`.
        serde_json::Value::Array(items) if items.is_empty() => "-".into(),
        serde_json::Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// `1d2h`, `3h4m`, `5m6s`, `7s`: precise enough for an uptime column.
pub fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    let (d, h, m, sec) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{}.{}s", sec, ms % 1000 / 100),
        (0, 0, _) => format!("{m}m{sec}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Milliseconds since the epoch as RFC 3339 UTC to the second
/// (`2026-11-30T02:24:50Z`); the raw number if out of range.
pub fn time_ms(ms: i64) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// Success when every node answered; failure when any did not (each
/// failure was printed as it happened).
pub fn exit_code(all_ok: bool) -> std::process::ExitCode {
    if all_ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(human_duration(1_234), "1.2s");
        assert_eq!(human_duration(65_000), "1m5s");
        assert_eq!(human_duration(3_725_000), "1h2m");
        assert_eq!(human_duration(90_061_000), "1d1h");
    }
}
