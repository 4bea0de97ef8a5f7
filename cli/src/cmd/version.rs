//! `slatectl version`: the client's version and each node's.

use std::process::ExitCode;

use clap::Args;
use serde::Serialize;
use slate_common::version;
use slate_proto::machine::VersionRequest;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::output::{self, Format, Rows};
use crate::{Global, connect};

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Print only the client's version; contact no node.
    #[arg(long)]
    pub client: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Format,
}

#[derive(Debug, Serialize)]
struct Row {
    node: String,
    tag: String,
    commit: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    kernel: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    arch: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    hostname: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    uptime_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    boot_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    maintenance: Option<String>,
}

impl Rows for Row {
    fn header() -> Vec<&'static str> {
        vec![
            "NODE", "TAG", "COMMIT", "KERNEL", "ARCH", "HOSTNAME", "UPTIME", "BOOTED",
        ]
    }

    fn row(&self) -> Vec<String> {
        let dash = |s: &str| {
            if s.is_empty() {
                "-".to_owned()
            } else {
                s.to_owned()
            }
        };
        vec![
            self.node.clone(),
            self.tag.clone(),
            self.commit.clone(),
            dash(&self.kernel),
            dash(&self.arch),
            dash(&self.hostname),
            self.uptime_ms
                .map(output::human_duration)
                .unwrap_or_else(|| "-".into()),
            self.boot_time.clone().unwrap_or_else(|| "-".into()),
        ]
    }
}

pub async fn run(global: &Global, args: VersionArgs) -> anyhow::Result<ExitCode> {
    let mut rows = vec![Row {
        node: "(client)".into(),
        tag: version::TAG.into(),
        commit: version::COMMIT.into(),
        kernel: String::new(),
        arch: std::env::consts::ARCH.into(),
        hostname: String::new(),
        uptime_ms: None,
        boot_time: None,
        maintenance: None,
    }];
    let mut ok = true;
    if !args.client {
        let session = connect::session(global)?;
        let (results, all_ok) = session
            .for_each(|channel| async move {
                connect::machine(channel)
                    .version(VersionRequest {})
                    .await
                    .map(|r| r.into_inner())
            })
            .await;
        ok = all_ok;
        for (target, v) in results {
            if v.maintenance {
                eprintln!(
                    "warning: {target} is in maintenance mode: {}",
                    v.maintenance_reason
                );
            }
            rows.push(Row {
                node: target.to_string(),
                tag: v.tag,
                commit: v.commit,
                kernel: v.kernel,
                arch: v.arch,
                hostname: v.hostname,
                uptime_ms: Some(v.uptime_ms),
                boot_time: OffsetDateTime::from_unix_timestamp(v.boot_time_unix)
                    .ok()
                    .and_then(|t| t.format(&Rfc3339).ok()),
                maintenance: v.maintenance.then_some(v.maintenance_reason),
            });
        }
    }
    output::print(args.output, &rows)?;
    Ok(output::exit_code(ok))
}
