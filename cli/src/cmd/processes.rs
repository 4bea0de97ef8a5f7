//! `slatectl processes`: what runs on the nodes and how much memory it holds.

use std::process::ExitCode;

use clap::Args;
use serde::Serialize;
use slate_proto::machine::ProcessesRequest;

use crate::output::{self, Format, Rows};
use crate::{Global, connect};

#[derive(Debug, Args)]
pub struct ProcessesArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Format,
    /// Hide kernel threads (processes without memory of their own).
    #[arg(long)]
    pub user_only: bool,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub node: String,
    pub pid: i32,
    pub ppid: i32,
    pub name: String,
    pub state: String,
    pub rss_bytes: u64,
    /// Effective uid and capabilities: what the process may do.
    pub uid: u32,
    pub capabilities: Vec<String>,
    pub command: String,
}

impl Rows for Row {
    fn header() -> Vec<&'static str> {
        vec![
            "NODE", "PID", "PPID", "NAME", "STATE", "RSS", "UID", "CAPS", "COMMAND",
        ]
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.node.clone(),
            self.pid.to_string(),
            self.ppid.to_string(),
            self.name.clone(),
            self.state.clone(),
            output::mib(self.rss_bytes),
            self.uid.to_string(),
            if self.capabilities.is_empty() {
                "-".into()
            } else {
                self.capabilities.join(",")
            },
            self.command.clone(),
        ]
    }
}

pub async fn run(global: &Global, args: ProcessesArgs) -> anyhow::Result<ExitCode> {
    let session = connect::session(global)?;
    let (results, ok) = session
        .for_each(|channel| async move {
            connect::machine(channel)
                .processes(ProcessesRequest {})
                .await
                .map(|r| r.into_inner())
        })
        .await;
    let rows: Vec<Row> = results
        .into_iter()
        .flat_map(|(target, resp)| {
            resp.processes.into_iter().map(move |p| Row {
                node: target.to_string(),
                pid: p.pid,
                ppid: p.ppid,
                name: p.name,
                state: p.state,
                rss_bytes: p.rss_bytes,
                uid: p.uid,
                capabilities: p.capabilities,
                command: p.command,
            })
        })
        .filter(|r| !args.user_only || r.rss_bytes > 0)
        .collect();
    output::print(args.output, &rows)?;
    Ok(output::exit_code(ok))
}
