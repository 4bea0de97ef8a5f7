//! `slatectl config new --roles os:reader -o reader.slateconfig`: a client
//! config for another person or tool, with a certificate for one role,
//! issued by the node from the machine CA in its config, so the client
//! needs no CA key. Needs os:admin.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use slate_config::clientconfig::{ClientConfig, Context};
use slate_pki::{CertAndKey, Role};
use slate_proto::machine::GenerateClientConfigurationRequest;

use crate::{Global, connect};

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Mint a client config for a role (os:admin, os:operator or os:reader).
    New(NewArgs),
    /// List the contexts of the client config; `*` marks the current one.
    Contexts {
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: crate::output::Format,
    },
    /// Make a context the current one.
    Context { name: String },
    /// Show the context in use.
    Info {
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: crate::output::Format,
    },
    /// Set the endpoints of the context in use (none: clear them).
    #[command(visible_alias = "endpoints")]
    Endpoint { hosts: Vec<String> },
    /// Set the default nodes of the context in use (none: clear them).
    #[command(visible_alias = "nodes")]
    Node { hosts: Vec<String> },
    /// Add the contexts of another client config file to this one.
    Merge { file: PathBuf },
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The role of the new certificate.
    #[arg(long = "roles", value_name = "ROLE", value_parser = |s: &str| s.parse::<Role>().map_err(|e| e.to_string()))]
    pub role: Role,
    /// Who it is for (the certificate's common name).
    #[arg(long, default_value = "")]
    pub name: String,
    /// Where to write the new client config (mode 0600).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
}

pub async fn run(global: &Global, cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    use super::contexts::{self, Field};
    let args = match cmd {
        ConfigCommand::New(args) => args,
        ConfigCommand::Contexts { output } => return contexts::contexts(global, output),
        ConfigCommand::Context { name } => return contexts::switch(global, &name),
        ConfigCommand::Info { output } => return contexts::info(global, output),
        ConfigCommand::Endpoint { hosts } => {
            return contexts::set(global, Field::Endpoints, &hosts);
        }
        ConfigCommand::Node { hosts } => return contexts::set(global, Field::Nodes, &hosts),
        ConfigCommand::Merge { file } => return contexts::merge(global, &file),
    };
    if args.output.exists() && !args.force {
        bail!(
            "{} already exists; pass --force to overwrite",
            args.output.display()
        );
    }
    let session = connect::session(global)?;
    let target = session
        .targets
        .first()
        .context("no node to ask: pass -n HOST")?
        .clone();
    let channel = session
        .connect(&target)
        .await
        .map_err(|e| anyhow::anyhow!("{target}: {}", slate_common::error::chain(&e)))?;
    let r = connect::machine(channel)
        .generate_client_configuration(GenerateClientConfigurationRequest {
            role: args.role.as_str().to_owned(),
            name: args.name.clone(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("{target}: {}", s.message()))?
        .into_inner();
    let name = format!(
        "{}-{}",
        target.host,
        args.role.as_str().trim_start_matches("os:")
    );
    let mut config = ClientConfig {
        context: Some(name.clone()),
        ..Default::default()
    };
    let endpoints = session.targets.iter().map(ToString::to_string).collect();
    let identity = CertAndKey {
        cert_pem: r.crt_pem,
        key_pem: r.key_pem,
    };
    config
        .contexts
        .insert(name, Context::new(endpoints, &r.ca_pem, &identity));
    config
        .save(&args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;
    println!("created {} (role {})", args.output.display(), args.role);
    Ok(ExitCode::SUCCESS)
}
