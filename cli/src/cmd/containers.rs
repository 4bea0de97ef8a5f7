//! `slatectl containers` and `slatectl images`: what containerd runs and
//! holds on the nodes.

use std::process::ExitCode;

use clap::Args;
use serde::Serialize;
use slate_proto::machine::machine_service_client::MachineServiceClient;
use slate_proto::machine::{ContainersRequest, ImagesRequest};

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

impl ContainersArgs {
    fn namespace(&self) -> String {
        if self.kubernetes {
            "k8s.io".to_owned()
        } else {
            self.namespace.clone().unwrap_or_default()
        }
    }
}

pub async fn run(global: &Global, args: ContainersArgs) -> anyhow::Result<ExitCode> {
    per_node(
        global,
        &args,
        |mut client, namespace| async move {
            client
                .containers(ContainersRequest { namespace })
                .await
                .map(|r| r.into_inner().containers)
        },
        |node, c| Row {
            node,
            namespace: c.namespace,
            id: c.id,
            image: c.image,
            pod: c.pod,
            name: c.name,
            pid: c.pid,
            status: c.status,
        },
    )
    .await
}

/// Asks every node with `call` (given the namespace `args` names) and
/// prints a row per item of each answer, made by `row` with the node's
/// name; a node that fails is an error line and exit code 1.
async fn per_node<T, R, F, Fut>(
    global: &Global,
    args: &ContainersArgs,
    call: F,
    row: impl Fn(String, T) -> R,
) -> anyhow::Result<ExitCode>
where
    R: Rows + Serialize,
    F: Fn(MachineServiceClient<slate_client::Conn>, String) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<T>, tonic::Status>>,
{
    let namespace = args.namespace();
    let session = connect::session(global)?;
    let (results, ok) = session
        .for_each(|channel| call(connect::machine(channel), namespace.clone()))
        .await;
    let rows: Vec<R> = results
        .into_iter()
        .flat_map(|(target, items)| {
            let node = target.to_string();
            items
                .into_iter()
                .map(|i| row(node.clone(), i))
                .collect::<Vec<_>>()
        })
        .collect();
    output::print(args.output, &rows)?;
    Ok(output::exit_code(ok))
}

#[derive(Debug, Serialize)]
pub struct ImageRow {
    pub node: String,
    pub namespace: String,
    pub name: String,
    pub digest: String,
    pub media_type: String,
}

impl Rows for ImageRow {
    fn header() -> Vec<&'static str> {
        vec!["NODE", "NAMESPACE", "NAME", "DIGEST"]
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.node.clone(),
            self.namespace.clone(),
            self.name.clone(),
            self.digest.clone(),
        ]
    }
}

/// `slatectl images`: the images containerd holds, per node.
pub async fn images(global: &Global, args: ContainersArgs) -> anyhow::Result<ExitCode> {
    per_node(
        global,
        &args,
        |mut client, namespace| async move {
            client
                .images(ImagesRequest { namespace })
                .await
                .map(|r| r.into_inner().images)
        },
        |node, i| ImageRow {
            node,
            namespace: i.namespace,
            name: i.name,
            digest: i.digest,
            media_type: i.media_type,
        },
    )
    .await
}
