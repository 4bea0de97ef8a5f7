//! `slatectl gen config NAME https://ENDPOINT:6443`: a cluster's machine
//! configs and an admin client config; `slatectl gen secrets`: the secrets
//! alone, to make configs for more nodes of the same cluster later.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use slate_common::fs::write_atomic;
use slate_config::generate::{self, Options, Secrets};
use slate_config::{Mode, patch};

use super::patch_args;

#[derive(Debug, Subcommand)]
pub enum GenCommand {
    /// Generate controlplane.yaml, worker.yaml and slateconfig for a cluster.
    Config(GenConfigArgs),
    /// Generate a cluster's secrets (CAs, token, cluster id and secret) into one file.
    Secrets(GenSecretsArgs),
    /// Make a join token on a control-plane node: a node booted with it
    /// registers, and joins once accepted (docs/join.md).
    JoinToken(super::join::GenTokenArgs),
}

#[derive(Debug, Args)]
pub struct GenSecretsArgs {
    /// File to write (mode 0600).
    #[arg(short = 'o', long = "output-file", default_value = "secrets.yaml")]
    pub output: PathBuf,
    /// Name used in the CAs' common names.
    #[arg(long, default_value = "slate")]
    pub cluster_name: String,
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
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
    /// Use the secrets of an existing cluster (from `slatectl gen secrets`).
    #[arg(long, value_name = "FILE")]
    pub with_secrets: Option<PathBuf>,
    /// Patch both configs: @FILE or inline YAML/JSON (a mapping merges, a list is RFC 6902). Repeatable.
    #[arg(long = "config-patch", value_name = "@FILE|PATCH")]
    pub config_patch: Vec<String>,
    /// Patch only controlplane.yaml. Repeatable.
    #[arg(long = "config-patch-control-plane", value_name = "@FILE|PATCH")]
    pub config_patch_control_plane: Vec<String>,
    /// Patch only worker.yaml. Repeatable.
    #[arg(long = "config-patch-worker", value_name = "@FILE|PATCH")]
    pub config_patch_worker: Vec<String>,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

pub fn run(cmd: GenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        GenCommand::Config(args) => config(args),
        GenCommand::Secrets(args) => secrets(args),
        // Asks a node: `crate::run` sends it to `join::gen_token`.
        GenCommand::JoinToken(_) => bail!("gen join-token is made on a control-plane node"),
    }
}

fn secrets(args: GenSecretsArgs) -> anyhow::Result<ExitCode> {
    let secrets = Secrets::generate(&args.cluster_name)?;
    write_all(&[(args.output, secrets.to_yaml()?)], args.force)?;
    Ok(ExitCode::SUCCESS)
}

fn config(args: GenConfigArgs) -> anyhow::Result<ExitCode> {
    let secrets = match &args.with_secrets {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Some(Secrets::parse(&text, &path.display().to_string())?)
        }
        None => None,
    };
    // Every patch is read and parsed before anything is generated.
    let common = patch_args::load(&args.config_patch, "--config-patch")?;
    let mut cp_patches = common.clone();
    cp_patches.extend(patch_args::load(
        &args.config_patch_control_plane,
        "--config-patch-control-plane",
    )?);
    let mut worker_patches = common;
    worker_patches.extend(patch_args::load(
        &args.config_patch_worker,
        "--config-patch-worker",
    )?);

    let bundle = generate::generate(&Options {
        cluster_name: args.cluster_name.clone(),
        endpoint: args.endpoint.clone(),
        additional_sans: args.additional_sans.clone(),
        client_endpoints: args.client_endpoints.clone(),
        install_disk: args.install_disk.clone(),
        secrets,
    })?;
    let controlplane = patch::apply(&bundle.controlplane, &cp_patches, Mode::Cloud)
        .context("patching controlplane.yaml")?;
    let worker = patch::apply(&bundle.worker, &worker_patches, Mode::Cloud)
        .context("patching worker.yaml")?;
    let dir = &args.output_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_all(
        &[
            (dir.join("controlplane.yaml"), controlplane.to_yaml()?),
            (dir.join("worker.yaml"), worker.to_yaml()?),
            (dir.join("slateconfig"), bundle.client.to_yaml()?),
        ],
        args.force,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Writes every file (mode 0600: each holds private keys), after checking
/// that none exists unless `force`: a refusal leaves nothing half-written.
fn write_all(files: &[(PathBuf, String)], force: bool) -> anyhow::Result<()> {
    if !force {
        let existing: Vec<String> = files
            .iter()
            .filter(|(p, _)| p.exists())
            .map(|(p, _)| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            bail!(
                "{} already exist(s); pass --force to overwrite",
                existing.join(", ")
            );
        }
    }
    for (path, text) in files {
        write_atomic(path, text.as_bytes(), 0o600)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("created {}", display(path));
    }
    Ok(())
}

fn display(path: &Path) -> String {
    path.strip_prefix("./")
        .unwrap_or(path)
        .display()
        .to_string()
}
