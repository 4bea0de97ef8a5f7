//! `slatectl containers`: what containerd runs on the nodes.

use std::process::ExitCode;

use clap::Args;
use serde::Serialize;
use slate_proto::machine::ContainersRequest;

use crate::output::{self, Format, Rows};
use crate::{Global, connect};

#[derive(Debug, Args)]
pub struct ContainersArgs {
    /// Only this containerd namespace (all by default).
    #[arg(long, conflicts_with = "kubernetes")]
    pub namespace: Option<String>,
    /// Only Kubernetes' containers (namespace k8s.io).
    #[arg(short = 'k', long)]
    pub kubernetes: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Format,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub node: String,
    pub namespace: String,
    pub id: String,
    pub image: String,
    pub pod: String,
    pub name: String,
    pub pid: u32,
    pub status: String,
}

impl Rows for Row {
    fn header() -> Vec<&'static str> {
        vec!["NODE", "NAMESPACE", "ID", "IMAGE", "POD", "PID", "STATUS"]
    }

    fn row(&self) -> Vec<String> {
        let dash = |s: &str| {
            if s.is_empty() {
                "-".into()
            } else {
                s.to_owned()
            }
        };
        vec![
            self.node.clone(),
            self.namespace.clone(),
            self.id.clone(),
            dash(&self.image),
            dash(&self.pod),
            if self.pid == 0 {
                "-".into()
            } else {
                self.pid.to_string()
            },
            dash(&self.status),
        ]
    }
}

pub async fn run(global: &Global, args: ContainersArgs) -> anyhow::Result<ExitCode> {
    let namespace = if args.kubernetes {
        "k8s.io".to_owned()
    } else {
        args.namespace.unwrap_or_default()
    };
    let session = connect::session(global)?;
    let (results, ok) = session
        .for_each(|channel| {
            let namespace = namespace.clone();
            async move {
                connect::machine(channel)
                    .containers(ContainersRequest { namespace })
                    .await
                    .map(|r| r.into_inner().containers)
            }
        })
        .await;
    let rows: Vec<Row> = results
        .into_iter()
        .flat_map(|(target, containers)| {
            containers.into_iter().map(move |c| Row {
                node: target.to_string(),
                namespace: c.namespace,
                id: c.id,
                image: c.image,
                pod: c.pod,
                name: c.name,
                pid: c.pid,
                status: c.status,
            })
        })
        .collect();
    output::print(args.output, &rows)?;
    Ok(output::exit_code(ok))
}
