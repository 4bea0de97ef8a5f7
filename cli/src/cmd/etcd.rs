//! `slatectl bootstrap` and `slatectl etcd members|snapshot|leave|remove-member`:
//! the etcd cluster of the control-plane nodes.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use futures::StreamExt as _;
use serde::Serialize;
use slate_proto::machine::{
    BootstrapRequest, EtcdLeaveRequest, EtcdMembersRequest, EtcdRemoveMemberRequest,
    EtcdSnapshotRequest,
};

use crate::output::{self, Format, Rows};
use crate::{Global, connect};

#[derive(Debug, Subcommand)]
pub enum EtcdCommand {
    /// List the cluster's members as each node's etcd sees them.
    Members(MembersArgs),
    /// Save a snapshot of the database (every Kubernetes secret is in it).
    Snapshot(SnapshotArgs),
    /// Take this node out of the cluster: its member is removed, its etcd
    /// stopped and its data deleted.
    Leave,
    /// Remove another member, a node that is gone for good.
    RemoveMember(RemoveMemberArgs),
}

#[derive(Debug, Args)]
pub struct MembersArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Where to write it; it is written to a temporary file and renamed,
    /// so a failed transfer leaves no partial snapshot.
    pub path: PathBuf,
}

#[derive(Debug, Args)]
pub struct RemoveMemberArgs {
    /// The member's name (its node's hostname) or its id in hex.
    pub member: String,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub node: String,
    pub id: String,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub learner: bool,
    pub leader: bool,
}

impl Rows for Row {
    fn header() -> Vec<&'static str> {
        vec!["NODE", "ID", "NAME", "PEER URLS", "CLIENT URLS", "ROLE"]
    }

    fn row(&self) -> Vec<String> {
        let role = match (self.leader, self.learner) {
            (true, _) => "leader",
            (false, true) => "learner",
            (false, false) => "voter",
        };
        vec![
            self.node.clone(),
            self.id.clone(),
            if self.name.is_empty() {
                "(not started)".into()
            } else {
                self.name.clone()
            },
            self.peer_urls.join(","),
            self.client_urls.join(","),
            role.into(),
        ]
    }
}

/// `slatectl bootstrap`: a new etcd cluster on the one node given.
pub async fn bootstrap(global: &Global) -> anyhow::Result<ExitCode> {
    let session = connect::session(global)?;
    // On two nodes at once it would make two clusters.
    let target = session.single("bootstrap")?;
    let channel = session.connect_to(&target).await?;
    let reply = connect::machine(channel)
        .bootstrap(BootstrapRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("{target}: bootstrap refused: {}", s.message()))?
        .into_inner();
    println!("{target}: {}", reply.message);
    Ok(ExitCode::SUCCESS)
}

pub async fn run(global: &Global, command: EtcdCommand) -> anyhow::Result<ExitCode> {
    match command {
        EtcdCommand::Members(args) => members(global, args.output).await,
        EtcdCommand::Snapshot(args) => snapshot(global, args).await,
        EtcdCommand::Leave => {
            let session = connect::session(global)?;
            let (results, ok) = session
                .for_each(|channel| async move {
                    connect::machine(channel)
                        .etcd_leave(EtcdLeaveRequest {})
                        .await
                        .map(drop)
                })
                .await;
            for (target, ()) in results {
                println!(
                    "{target}: left the etcd cluster; its etcd is stopped and its data deleted"
                );
            }
            Ok(output::exit_code(ok))
        }
        EtcdCommand::RemoveMember(args) => {
            let session = connect::session(global)?;
            let target = session.single("etcd remove-member")?;
            let channel = session.connect_to(&target).await?;
            connect::machine(channel)
                .etcd_remove_member(EtcdRemoveMemberRequest {
                    member: args.member.clone(),
                })
                .await
                .map_err(|s| anyhow::anyhow!("{target}: {}", s.message()))?;
            println!("{target}: member {} removed", args.member);
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn members(global: &Global, format: Format) -> anyhow::Result<ExitCode> {
    let session = connect::session(global)?;
    let (results, ok) = session
        .for_each(|channel| async move {
            connect::machine(channel)
                .etcd_members(EtcdMembersRequest {})
                .await
                .map(tonic::Response::into_inner)
        })
        .await;
    let rows: Vec<Row> = results
        .into_iter()
        .flat_map(|(target, reply)| {
            let leader = reply.leader;
            reply.members.into_iter().map(move |m| Row {
                node: target.to_string(),
                id: format!("{:x}", m.id),
                name: m.name,
                peer_urls: m.peer_urls,
                client_urls: m.client_urls,
                learner: m.learner,
                leader: m.id == leader && leader != 0,
            })
        })
        .collect();
    output::print(format, &rows)?;
    Ok(output::exit_code(ok))
}

/// Streams the snapshot into a temporary file beside `path`, then renames
/// it: a broken transfer never leaves a file that looks complete.
async fn snapshot(global: &Global, args: SnapshotArgs) -> anyhow::Result<ExitCode> {
    let (target, mut client) = super::services::one_node(global, "etcd snapshot").await?;
    let mut stream = client
        .etcd_snapshot(EtcdSnapshotRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("{target}: {}", s.message()))?
        .into_inner();
    let dir = match args.path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut file = tempfile::NamedTempFile::new_in(&dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|s| anyhow::anyhow!("{target}: snapshot: {}", s.message()))?;
        bytes += chunk.data.len() as u64;
        file.write_all(&chunk.data)
            .with_context(|| format!("writing {}", args.path.display()))?;
    }
    anyhow::ensure!(bytes > 0, "{target}: the snapshot was empty");
    file.as_file().sync_all()?;
    file.persist(&args.path)
        .with_context(|| format!("saving {}", args.path.display()))?;
    println!(
        "{target}: snapshot of {bytes} bytes saved to {}",
        args.path.display()
    );
    Ok(ExitCode::SUCCESS)
}
