//! `slatectl kubeconfig [PATH] [--force] [--merge]`: an admin kubeconfig
//! for the cluster, issued by a control-plane node (os:admin), merged into
//! `~/.kube/config` by default as talosctl does.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use slate_proto::machine::KubeconfigRequest;

use crate::{Global, connect};

#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    /// Where to write it: a file, a directory (then DIR/kubeconfig), or
    /// `-` for standard output. By default merged into the first file of
    /// $KUBECONFIG, else ~/.kube/config.
    pub path: Option<PathBuf>,
    /// Replace an existing file.
    #[arg(short, long, conflicts_with = "merge")]
    pub force: bool,
    /// Merge into an existing file: this cluster's entries replace those
    /// of the same name, and its context becomes current.
    #[arg(short, long)]
    pub merge: bool,
}

/// kubectl's default kubeconfig: the first file of $KUBECONFIG, else
/// ~/.kube/config.
fn default_path() -> anyhow::Result<PathBuf> {
    if let Some(list) = std::env::var_os("KUBECONFIG")
        && let Some(first) = std::env::split_paths(&list).find(|p| !p.as_os_str().is_empty())
    {
        return Ok(first);
    }
    let home = std::env::var_os("HOME").context("HOME is not set: name a PATH")?;
    Ok(PathBuf::from(home).join(".kube").join("config"))
}

pub async fn run(global: &Global, args: KubeconfigArgs) -> anyhow::Result<ExitCode> {
    let session = connect::session(global)?;
    let target = session.single("kubeconfig")?;
    let channel = session.connect_to(&target).await?;
    let yaml = connect::machine(channel)
        .kubeconfig(KubeconfigRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("{target}: {}", s.message()))?
        .into_inner()
        .kubeconfig;
    let yaml = String::from_utf8(yaml).context("the node's kubeconfig is not UTF-8")?;
    let (path, merge) = match args.path {
        Some(p) if p.as_os_str() == "-" => {
            print!("{yaml}");
            return Ok(ExitCode::SUCCESS);
        }
        Some(p) if p.is_dir() => (p.join("kubeconfig"), args.merge),
        Some(p) => (p, args.merge),
        None => (default_path()?, !args.force),
    };
    write(&path, &yaml, merge, args.force)?;
    eprintln!(
        "{} {}",
        if merge { "merged into" } else { "wrote" },
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes or merges `yaml` into `path`, atomically (0600, the key is in
/// it); a file that exists is touched only with `merge` or `force`, and a
/// file that does not parse is never overwritten by a merge.
fn write(path: &Path, yaml: &str, merge: bool, force: bool) -> anyhow::Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(existing) if merge => {
            let existing = slate_k8s::kubeconfig::parse(&existing).map_err(|e| {
                anyhow::anyhow!("{}: not a kubeconfig, not merged: {e}", path.display())
            })?;
            let new = slate_k8s::kubeconfig::parse(yaml)
                .map_err(|e| anyhow::anyhow!("the node's kubeconfig: {e}"))?;
            slate_k8s::kubeconfig::render(&slate_k8s::kubeconfig::merge(existing, new))?
        }
        Ok(_) if !force => anyhow::bail!(
            "{} exists: --merge to add this cluster to it, --force to replace it",
            path.display()
        ),
        Ok(_) => yaml.to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => yaml.to_owned(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    slate_common::fs::write_atomic(path, text.as_bytes(), 0o600)
        .with_context(|| format!("writing {}", path.display()))
}
