//! `slatectl services`, `slatectl service ID [start|stop|restart]`,
//! `slatectl logs ID [-f] [--tail N]` and `slatectl dmesg [-f] [--tail N]`:
//! the node's services, as Talos users know them.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use futures::StreamExt as _;
use serde::Serialize;
use slate_proto::machine::{
    DmesgRequest, LogsRequest, ServiceActionKind, ServiceActionRequest, ServiceInfo,
    ServiceListRequest,
};

use crate::output::{self, Format, Rows};
use crate::{Global, connect};

#[derive(Debug, Args)]
pub struct ServicesArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Action {
    Start,
    Stop,
    Restart,
}

#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// The service, e.g. containerd, etcd, kubelet.
    pub id: String,
    /// What to do; without one, show its state and recent events.
    #[arg(value_enum)]
    pub action: Option<Action>,
    /// Output format (without an action).
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The service.
    pub id: String,
    /// Keep printing new lines.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long)]
    pub tail: Option<u32>,
}

#[derive(Debug, Args)]
pub struct DmesgArgs {
    /// Keep printing new kernel messages.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N messages.
    #[arg(long)]
    pub tail: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub node: String,
    #[serde(flatten)]
    pub service: ServiceJson,
}

/// [`ServiceInfo`] for yaml/json output.
#[derive(Debug, Serialize)]
pub struct ServiceJson {
    pub id: String,
    pub state: String,
    pub health: String,
    pub pid: u32,
    pub restarts: u32,
    pub events: Vec<EventJson>,
}

#[derive(Debug, Serialize)]
pub struct EventJson {
    pub time_unix_ms: i64,
    pub state: String,
    pub message: String,
}

impl From<ServiceInfo> for ServiceJson {
    fn from(s: ServiceInfo) -> Self {
        Self {
            id: s.id,
            state: s.state,
            health: s.health,
            pid: s.pid,
            restarts: s.restarts,
            events: s
                .events
                .into_iter()
                .map(|e| EventJson {
                    time_unix_ms: e.time_unix_ms,
                    state: e.state,
                    message: e.message,
                })
                .collect(),
        }
    }
}

impl Rows for Row {
    fn header() -> Vec<&'static str> {
        vec![
            "NODE",
            "SERVICE",
            "STATE",
            "HEALTH",
            "PID",
            "RESTARTS",
            "LAST EVENT",
        ]
    }

    fn row(&self) -> Vec<String> {
        let s = &self.service;
        vec![
            self.node.clone(),
            s.id.clone(),
            s.state.clone(),
            if s.health.is_empty() {
                "-".into()
            } else {
                s.health.clone()
            },
            if s.pid == 0 {
                "-".into()
            } else {
                s.pid.to_string()
            },
            s.restarts.to_string(),
            s.events
                .last()
                .map(|e| e.message.clone())
                .unwrap_or_default(),
        ]
    }
}

/// `ServiceList` on every node (`id` empty: all services); failures are
/// printed and make the flag false.
async fn fetch(
    global: &Global,
    id: &str,
) -> anyhow::Result<(Vec<(slate_client::Target, Vec<ServiceInfo>)>, bool)> {
    let session = connect::session(global)?;
    let id = id.to_owned();
    Ok(session
        .for_each(|channel| {
            let id = id.clone();
            async move {
                connect::machine(channel)
                    .service_list(ServiceListRequest { id })
                    .await
                    .map(|r| r.into_inner().services)
            }
        })
        .await)
}

async fn list(global: &Global, id: &str, format: Format) -> anyhow::Result<ExitCode> {
    let (results, ok) = fetch(global, id).await?;
    let rows: Vec<Row> = results
        .into_iter()
        .flat_map(|(target, services)| {
            services.into_iter().map(move |s| Row {
                node: target.to_string(),
                service: s.into(),
            })
        })
        .collect();
    output::print(format, &rows)?;
    Ok(output::exit_code(ok))
}

pub async fn services(global: &Global, args: ServicesArgs) -> anyhow::Result<ExitCode> {
    list(global, "", args.output).await
}

pub async fn service(global: &Global, args: ServiceArgs) -> anyhow::Result<ExitCode> {
    let Some(action) = args.action else {
        if args.output != Format::Table {
            return list(global, &args.id, args.output).await;
        }
        return events(global, &args.id).await;
    };
    let kind = match action {
        Action::Start => ServiceActionKind::Start,
        Action::Stop => ServiceActionKind::Stop,
        Action::Restart => ServiceActionKind::Restart,
    };
    let session = connect::session(global)?;
    let id = args.id.clone();
    let (results, ok) = session
        .for_each(|channel| {
            let id = id.clone();
            async move {
                connect::machine(channel)
                    .service_action(ServiceActionRequest {
                        id,
                        action: kind as i32,
                    })
                    .await
                    .map(drop)
            }
        })
        .await;
    for (target, ()) in results {
        println!("{target}: {} {:?} requested", args.id, action);
    }
    Ok(output::exit_code(ok))
}

/// One service on each node: its state, then its recent events.
async fn events(global: &Global, id: &str) -> anyhow::Result<ExitCode> {
    let (results, ok) = fetch(global, id).await?;
    for (target, services) in results {
        for s in services {
            let health = if s.health.is_empty() { "-" } else { &s.health };
            println!(
                "NODE      {target}\nID        {}\nSTATE     {}\nHEALTH    {health}\nRESTARTS  {}",
                s.id, s.state, s.restarts
            );
            println!("EVENTS");
            for e in &s.events {
                println!(
                    "  {}  {:<9} {}",
                    output::time_ms(e.time_unix_ms),
                    e.state,
                    e.message
                );
            }
        }
    }
    Ok(output::exit_code(ok))
}

pub async fn logs(global: &Global, args: LogsArgs) -> anyhow::Result<ExitCode> {
    let (target, mut client) = one_node(global, "logs").await?;
    let stream = client
        .logs(LogsRequest {
            id: args.id,
            follow: args.follow,
            tail: args.tail,
        })
        .await
        .map_err(|s| anyhow::anyhow!("{target}: {}", s.message()))?
        .into_inner();
    print_lines(&target, stream).await
}

pub async fn dmesg(global: &Global, args: DmesgArgs) -> anyhow::Result<ExitCode> {
    let (target, mut client) = one_node(global, "dmesg").await?;
    let stream = client
        .dmesg(DmesgRequest {
            follow: args.follow,
            tail: args.tail,
        })
        .await
        .map_err(|s| anyhow::anyhow!("{target}: {}", s.message()))?
        .into_inner();
    print_lines(&target, stream).await
}

/// The machine client of the one node a streaming command follows.
pub(crate) async fn one_node(
    global: &Global,
    what: &str,
) -> anyhow::Result<(
    slate_client::Target,
    slate_proto::machine::machine_service_client::MachineServiceClient<slate_client::Conn>,
)> {
    let session = connect::session(global)?;
    let target = session.single(what)?;
    let channel = session.connect_to(&target).await?;
    Ok((target, connect::machine(channel)))
}

async fn print_lines(
    target: &impl std::fmt::Display,
    mut stream: tonic::codec::Streaming<slate_proto::machine::LogLine>,
) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    while let Some(line) = stream.next().await {
        let line = line.map_err(|s| anyhow::anyhow!("{target}: {}", s.message()))?;
        // A closed pipe (`| head`) ends the command quietly.
        if writeln!(out, "{}", line.line)
            .and_then(|()| out.flush())
            .is_err()
        {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}
