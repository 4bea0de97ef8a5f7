//! `slatectl get TYPE`: the node's state by type. Only `machineconfig`
//! exists yet; the resource service of the design notes will add the rest
//! through this same command.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use slate_proto::machine::GetMachineConfigRequest;

use crate::{Global, connect};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResourceType {
    /// The running machine config (secrets redacted).
    #[value(name = "machineconfig", alias = "machineconfigs", alias = "mc")]
    MachineConfig,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Yaml,
    Json,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// What to show.
    #[arg(value_enum)]
    pub kind: ResourceType,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Format,
    /// Show private keys, tokens and secrets (needs os:admin).
    #[arg(long)]
    pub insecure_show_secrets: bool,
}

pub async fn run(global: &Global, args: GetArgs) -> anyhow::Result<ExitCode> {
    let ResourceType::MachineConfig = args.kind;
    let session = connect::session(global)?;
    let show_secrets = args.insecure_show_secrets;
    let (results, ok) = session
        .for_each(|channel| async move {
            slate_machinery::client::machine(channel)
                .get_machine_config(GetMachineConfigRequest { show_secrets })
                .await
                .map(|r| r.into_inner())
        })
        .await;
    let many = session.targets.len() > 1;
    for (target, r) in results {
        match args.output {
            Format::Yaml => {
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
                    slate_machinery::yaml::from_str(y)
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
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
