//! `slatectl get TYPE [-o table|yaml|json] [-w]`: the nodes' state by type,
//! one code path for every resource type (links, addresses, routes), plus
//! the machine config.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use futures::StreamExt as _;
use slate_client::Target;
use slate_proto::machine::{BootSlotsRequest, GetMachineConfigRequest, StaticPodsRequest};
use slate_proto::resource::resource_service_client::ResourceServiceClient;
use slate_proto::resource::watch_event::Kind;
use slate_proto::resource::{ListRequest, WatchRequest};

use crate::output::{self, Format};
use crate::{Global, connect};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResourceType {
    /// The running machine config (secrets redacted).
    #[value(name = "machineconfig", alias = "machineconfigs", alias = "mc")]
    MachineConfig,
    /// Network links.
    #[value(alias = "link")]
    Links,
    /// IP addresses.
    #[value(alias = "address", alias = "addr")]
    Addresses,
    /// Routes of the main table.
    #[value(alias = "route")]
    Routes,
    /// The node's hostname and which source chose it.
    Hostname,
    /// Name servers and search domains in use, and their source.
    #[value(alias = "resolver", alias = "dns")]
    Resolvers,
    /// Whether the config's network is in place, and what is missing.
    #[value(name = "networkstatus", alias = "netstatus")]
    NetworkStatus,
    /// Whether the clock is synced, with which server and offset.
    #[value(name = "timestatus", alias = "time")]
    TimeStatus,
    /// The API balancer: its endpoints, their health and latency.
    #[value(name = "apibalancer", alias = "balancer")]
    ApiBalancer,
    /// This node in the WireGuard mesh: key, mesh address, endpoints.
    #[value(name = "mesh-identity", alias = "meshidentity")]
    MeshIdentity,
    /// The mesh's peers: endpoint (or relay), state, last handshake, bytes.
    #[value(name = "mesh-peers", alias = "meshpeers", alias = "mesh-peer")]
    MeshPeers,
    /// The static pods in kubelet's manifest directory (the control plane).
    #[value(name = "staticpods", alias = "staticpod", alias = "static-pods")]
    StaticPods,
    /// The boot slots on the node's disk: version, state, since, why.
    #[value(name = "bootslots", alias = "bootslot", alias = "boot-slots")]
    BootSlots,
}

impl ResourceType {
    fn api_name(self) -> &'static str {
        match self {
            Self::MachineConfig => "machineconfig",
            Self::Links => "links",
            Self::Addresses => "addresses",
            Self::Routes => "routes",
            Self::Hostname => "hostname",
            Self::Resolvers => "resolvers",
            Self::NetworkStatus => "networkstatus",
            Self::TimeStatus => "timestatus",
            Self::ApiBalancer => "apibalancer",
            Self::MeshIdentity => "mesh-identity",
            Self::MeshPeers => "mesh-peers",
            Self::StaticPods => "staticpods",
            Self::BootSlots => "bootslots",
        }
    }

    /// Table columns: header and spec field.
    fn columns(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::MachineConfig => &[],
            Self::BootSlots => &[
                ("SLOT", "slot"),
                ("VERSION", "version"),
                ("STATE", "state"),
                ("ACTIVE", "active"),
                ("NEXT", "next"),
                ("SINCE", "since"),
                ("REASON", "reason"),
            ],
            Self::StaticPods => &[
                ("NAMESPACE", "namespace"),
                ("NAME", "name"),
                ("IMAGE", "image"),
                ("HASH", "hash"),
                ("ERROR", "error"),
            ],
            Self::Links => &[
                ("NAME", "name"),
                ("KIND", "kind"),
                ("MTU", "mtu"),
                ("UP", "up"),
                ("MAC", "mac"),
                ("CONTROLLER", "controller"),
            ],
            Self::Addresses => &[
                ("LINK", "link"),
                ("ADDRESS", "address"),
                ("FAMILY", "family"),
            ],
            Self::Routes => &[
                ("LINK", "link"),
                ("DESTINATION", "destination"),
                ("GATEWAY", "gateway"),
                ("METRIC", "metric"),
                ("PROTOCOL", "protocol"),
            ],
            Self::Hostname => &[("HOSTNAME", "hostname"), ("SOURCE", "source")],
            Self::Resolvers => &[
                ("NAMESERVERS", "nameservers"),
                ("SEARCH", "search"),
                ("SOURCE", "source"),
            ],
            Self::NetworkStatus => &[
                ("CONFIGURED", "configured"),
                ("CONVERGED", "converged"),
                ("MISSING", "missing"),
                ("FAILED", "failed"),
            ],
            Self::TimeStatus => &[
                ("SYNCED", "synced"),
                ("SERVER", "server"),
                ("OFFSET_MS", "offset_ms"),
                ("STRATUM", "stratum"),
                ("ERROR", "error"),
            ],
            Self::ApiBalancer => &[
                ("ENABLED", "enabled"),
                ("LISTEN", "listen"),
                ("PREFERRED", "preferred"),
                ("HEALTHY", "healthy"),
                ("ACTIVE", "active_connections"),
                ("ERROR", "error"),
            ],
            Self::MeshIdentity => &[
                ("MESH ADDRESS", "meshAddress"),
                ("PUBLIC KEY", "publicKey"),
                ("ENDPOINTS", "endpoints"),
                ("DISCOVERY", "discovery"),
            ],
            Self::MeshPeers => &[
                ("HOSTNAME", "hostname"),
                ("MESH ADDRESS", "meshAddress"),
                ("ENDPOINT", "endpoint"),
                ("STATE", "state"),
                ("LAST HANDSHAKE", "lastHandshake"),
                ("RX", "rxBytes"),
                ("TX", "txBytes"),
            ],
        }
    }
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// What to show.
    #[arg(value_enum)]
    pub kind: ResourceType,
    /// Output format (machineconfig: yaml or json).
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Format>,
    /// Keep running and print each change (not for machineconfig).
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Show private keys, tokens and secrets (machineconfig; needs os:admin).
    #[arg(long)]
    pub insecure_show_secrets: bool,
}

pub async fn run(global: &Global, args: GetArgs) -> anyhow::Result<ExitCode> {
    let session = connect::session(global)?;
    if args.kind == ResourceType::MachineConfig {
        anyhow::ensure!(!args.watch, "--watch is not available for machineconfig");
        return machine_config(&session, args).await;
    }
    anyhow::ensure!(
        !args.insecure_show_secrets,
        "--insecure-show-secrets is only for machineconfig"
    );
    let format = args.output.unwrap_or(Format::Table);
    if args.kind == ResourceType::StaticPods {
        anyhow::ensure!(!args.watch, "--watch is not available for staticpods");
        return static_pods(&session, format).await;
    }
    if args.kind == ResourceType::BootSlots {
        anyhow::ensure!(!args.watch, "--watch is not available for bootslots");
        return boot_slots(&session, format).await;
    }
    if args.watch {
        return watch(&session, args.kind, format).await;
    }
    let kind = args.kind.api_name();
    let (results, ok) = session
        .for_each(|channel| async move {
            ResourceServiceClient::new(channel)
                .list(ListRequest {
                    r#type: kind.into(),
                })
                .await
                .map(|r| r.into_inner().resources)
        })
        .await;
    let mut rows = Vec::new();
    for (target, resources) in results {
        for r in resources {
            rows.push(row(&target, &r.spec_json));
        }
    }
    output::print_values(format, args.kind.columns(), &rows)?;
    Ok(output::exit_code(ok))
}

/// The static pods of each node, from machined's manifest directory.
async fn static_pods(session: &connect::Session, format: Format) -> anyhow::Result<ExitCode> {
    let (results, ok) = session
        .for_each(|channel| async move {
            connect::machine(channel)
                .static_pods(StaticPodsRequest {})
                .await
                .map(|r| r.into_inner().pods)
        })
        .await;
    let rows: Vec<serde_json::Value> = results
        .into_iter()
        .flat_map(|(target, pods)| {
            pods.into_iter().map(move |p| {
                serde_json::json!({
                    "node": target.to_string(),
                    "namespace": p.namespace,
                    "name": p.name,
                    "file": p.file,
                    "image": p.image,
                    "hash": p.hash,
                    "error": p.error,
                })
            })
        })
        .collect();
    output::print_values(format, ResourceType::StaticPods.columns(), &rows)?;
    Ok(output::exit_code(ok))
}

/// The boot slots of each node's disk.
async fn boot_slots(session: &connect::Session, format: Format) -> anyhow::Result<ExitCode> {
    let (results, ok) = session
        .for_each(|channel| async move {
            connect::machine(channel)
                .boot_slots(BootSlotsRequest {})
                .await
                .map(|r| r.into_inner().slots)
        })
        .await;
    let rows: Vec<serde_json::Value> = results
        .into_iter()
        .flat_map(|(target, slots)| {
            slots.into_iter().map(move |s| {
                serde_json::json!({
                    "node": target.to_string(),
                    "slot": s.slot,
                    "version": s.version,
                    "state": s.state,
                    "active": s.active,
                    "next": s.next,
                    "since": since(s.since_unix),
                    "reason": s.reason,
                })
            })
        })
        .collect();
    output::print_values(format, ResourceType::BootSlots.columns(), &rows)?;
    Ok(output::exit_code(ok))
}

/// RFC 3339, UTC.
fn since(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// A resource as `{"node": …, <spec fields>}`.
fn row(target: &Target, spec_json: &str) -> serde_json::Value {
    let mut v: serde_json::Value =
        serde_json::from_str(spec_json).unwrap_or(serde_json::Value::Null);
    if let Some(map) = v.as_object_mut() {
        map.insert("node".into(), target.to_string().into());
    }
    v
}

/// Follows one node: the current resources, then each change, as lines.
async fn watch(
    session: &connect::Session,
    kind: ResourceType,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let target = session.single("--watch")?;
    let channel = session.connect_to(&target).await?;
    let mut events = ResourceServiceClient::new(channel)
        .watch(WatchRequest {
            r#type: kind.api_name().into(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("{target}: {}", s.message()))?
        .into_inner();
    let columns = kind.columns();
    if format == Format::Table {
        let header: Vec<&str> = std::iter::once("EVENT")
            .chain(columns.iter().map(|(h, _)| *h))
            .collect();
        println!("{}", header.join("\t"));
    }
    while let Some(event) = events.next().await {
        let event = event.map_err(|s| anyhow::anyhow!("{target}: {}", s.message()))?;
        let Some(resource) = event.resource else {
            continue;
        }; // the bookmark
        let what = match Kind::try_from(event.kind).unwrap_or(Kind::Updated) {
            Kind::Existing => "existing",
            Kind::Created => "created",
            Kind::Updated => "updated",
            Kind::Deleted => "deleted",
            Kind::Bookmark => continue,
        };
        let mut value = row(&target, &resource.spec_json);
        match format {
            Format::Table => {
                let cells: Vec<String> = std::iter::once(what.to_owned())
                    .chain(columns.iter().map(|(_, k)| output::cell(&value[*k])))
                    .collect();
                println!("{}", cells.join("\t"));
            }
            Format::Json | Format::Yaml => {
                if let Some(map) = value.as_object_mut() {
                    map.insert("event".into(), what.into());
                }
                println!("{}", serde_json::to_string(&value)?);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn machine_config(session: &connect::Session, args: GetArgs) -> anyhow::Result<ExitCode> {
    let show_secrets = args.insecure_show_secrets;
    let (results, ok) = session
        .for_each(|channel| async move {
            connect::machine(channel)
                .get_machine_config(GetMachineConfigRequest { show_secrets })
                .await
                .map(|r| r.into_inner())
        })
        .await;
    let many = session.targets.len() > 1;
    for (target, r) in results {
        match args.output.unwrap_or(Format::Yaml) {
            Format::Yaml | Format::Table => {
                if many {
                    println!("# node {target} (from {})", r.source);
                }
                print!("{}", r.yaml);
                if !r.staged_yaml.is_empty() {
                    println!("# staged for the next boot:");
                    print!("{}", r.staged_yaml);
                }
            }
            Format::Json => {
                let parse = |y: &str| -> anyhow::Result<serde_json::Value> {
                    slate_config::yaml::from_str(y)
                        .map_err(|e| anyhow::anyhow!("the node's YAML: {}", e.message))
                };
                let staged = if r.staged_yaml.is_empty() {
                    serde_json::Value::Null
                } else {
                    parse(&r.staged_yaml)?
                };
                let doc = serde_json::json!({
                    "node": target.to_string(),
                    "source": r.source,
                    "config": parse(&r.yaml)?,
                    "staged": staged,
                });
                println!("{}", serde_json::to_string_pretty(&doc)?);
            }
        }
    }
    Ok(output::exit_code(ok))
}
