//! `slatectl gen config NAME https://ENDPOINT:6443`: a new cluster's
//! machine configs and an admin client config.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use slate_machinery::fs::write_atomic;
use slate_machinery::generate::{self, Options};

#[derive(Debug, Subcommand)]
pub enum GenCommand {
    /// Generate controlplane.yaml, worker.yaml and slateconfig for a new cluster.
    Config(GenConfigArgs),
}

#[derive(Debug, Args)]
pub struct GenConfigArgs {
    /// Cluster name (a-z, 0-9, '-').
    pub cluster_name: String,
    /// Kubernetes API endpoint, https://HOST:PORT.
    pub endpoint: String,
    /// Directory to write the files into.
    #[arg(short = 'o', long = "output-dir", default_value = ".")]
    pub output_dir: PathBuf,
    /// Extra names or addresses for the nodes' API certificates (machine.certSANs).
    #[arg(long, value_delimiter = ',')]
    pub additional_sans: Vec<String>,
    /// apid endpoints for the client config (default: the endpoint's host).
    #[arg(long = "client-endpoints", value_delimiter = ',')]
    pub client_endpoints: Vec<String>,
    /// Disk to install Slate on (machine.install.disk).
    #[arg(long)]
    pub install_disk: Option<String>,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

pub fn run(cmd: GenCommand) -> anyhow::Result<ExitCode> {
    let GenCommand::Config(args) = cmd;
    let bundle = generate::generate(&Options {
        cluster_name: args.cluster_name.clone(),
        endpoint: args.endpoint.clone(),
        additional_sans: args.additional_sans.clone(),
        client_endpoints: args.client_endpoints.clone(),
        install_disk: args.install_disk.clone(),
    })?;
    let files = [
        ("controlplane.yaml", bundle.controlplane.to_yaml()?),
        ("worker.yaml", bundle.worker.to_yaml()?),
        ("slateconfig", bundle.client.to_yaml()?),
    ];
    std::fs::create_dir_all(&args.output_dir)
        .with_context(|| format!("creating {}", args.output_dir.display()))?;
    // Check every target before writing any, so a refusal leaves nothing
    // half-written.
    let paths: Vec<PathBuf> = files
        .iter()
        .map(|(name, _)| args.output_dir.join(name))
        .collect();
    if !args.force {
        let existing: Vec<String> = paths
            .iter()
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            bail!(
                "{} already exist(s); pass --force to overwrite",
                existing.join(", ")
            );
        }
    }
    for (path, (_, text)) in paths.iter().zip(&files) {
        // Every file holds private keys.
        write_atomic(path, text.as_bytes(), 0o600)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("created {}", display(path));
    }
    Ok(ExitCode::SUCCESS)
}

fn display(path: &Path) -> String {
    path.strip_prefix("./")
        .unwrap_or(path)
        .display()
        .to_string()
}
