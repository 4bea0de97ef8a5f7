//! `slatectl config contexts|context|info|endpoint|node|merge`: the client
//! config file edited in place, as talosctl's `config` commands do. Every
//! change is written whole to a temporary file and renamed (0600: the file
//! holds private keys), so a failed write leaves the old config.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde::Serialize;
use slate_config::clientconfig::ClientConfig;

use crate::output::{self, Format, Rows};
use crate::{Global, connect};

#[derive(Debug, Serialize)]
struct Row {
    current: bool,
    name: String,
    endpoints: Vec<String>,
    nodes: Vec<String>,
    role: String,
}

impl Rows for Row {
    fn header() -> Vec<&'static str> {
        vec!["CURRENT", "NAME", "ENDPOINTS", "NODES", "ROLE"]
    }

    fn row(&self) -> Vec<String> {
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".into()
            } else {
                v.join(",")
            }
        };
        vec![
            if self.current { "*" } else { "" }.into(),
            self.name.clone(),
            list(&self.endpoints),
            list(&self.nodes),
            self.role.clone(),
        ]
    }
}

fn rows(config: &ClientConfig) -> Vec<Row> {
    config
        .contexts
        .iter()
        .map(|(name, ctx)| Row {
            current: config.context.as_deref() == Some(name.as_str()),
            name: name.clone(),
            endpoints: ctx.endpoints.clone(),
            nodes: ctx.nodes.clone(),
            role: ctx
                .identity()
                .ok()
                .and_then(|id| slate_pki::pem_to_der(&id.cert_pem).ok())
                .and_then(|der| slate_pki::role_of(&der).ok())
                .map_or_else(|| "?".into(), |r| r.to_string()),
        })
        .collect()
}

/// `config contexts`: every context, the current one marked.
pub fn contexts(global: &Global, format: Format) -> anyhow::Result<ExitCode> {
    let path = connect::config_path(global)?;
    output::print(format, &rows(&connect::load_config(&path)?))?;
    Ok(ExitCode::SUCCESS)
}

/// `config info`: the context in use.
pub fn info(global: &Global, format: Format) -> anyhow::Result<ExitCode> {
    let path = connect::config_path(global)?;
    let config = connect::load_config(&path)?;
    let name = connect::context_name(global, &config, &path)?;
    let row: Vec<Row> = rows(&config)
        .into_iter()
        .filter(|r| r.name == name)
        .collect();
    if row.is_empty() {
        bail!("{}: no context named {name:?}", path.display());
    }
    output::print(format, &row)?;
    Ok(ExitCode::SUCCESS)
}

/// `config context NAME`: makes NAME the current context.
pub fn switch(global: &Global, name: &str) -> anyhow::Result<ExitCode> {
    let path = connect::config_path(global)?;
    let mut config = connect::load_config(&path)?;
    if !config.contexts.contains_key(name) {
        bail!(
            "{}: no context named {name:?} (there are: {})",
            path.display(),
            config
                .contexts
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    config.context = Some(name.to_owned());
    config.save(&path)?;
    println!("current context: {name}");
    Ok(ExitCode::SUCCESS)
}

/// What `config endpoint` and `config node` set.
#[derive(Debug, Clone, Copy)]
pub enum Field {
    Endpoints,
    Nodes,
}

/// `config endpoint HOST…` / `config node HOST…`: replaces the list of
/// the context in use (none given: empties it).
pub fn set(global: &Global, field: Field, hosts: &[String]) -> anyhow::Result<ExitCode> {
    for host in hosts {
        slate_client::parse_target(host)?;
    }
    let path = connect::config_path(global)?;
    let mut config = connect::load_config(&path)?;
    let name = connect::context_name(global, &config, &path)?;
    let ctx = config
        .contexts
        .get_mut(&name)
        .with_context(|| format!("{}: no context named {name:?}", path.display()))?;
    match field {
        Field::Endpoints => ctx.endpoints = hosts.to_vec(),
        Field::Nodes => ctx.nodes = hosts.to_vec(),
    }
    config.save(&path)?;
    Ok(ExitCode::SUCCESS)
}

/// `config merge FILE`: adds FILE's contexts; a name that exists already
/// gets a suffix (`-1`, `-2`, …), as talosctl does. The merged file's
/// current context becomes current.
pub fn merge(global: &Global, file: &Path) -> anyhow::Result<ExitCode> {
    let path = connect::config_path(global)?;
    let incoming = connect::load_config(file)?;
    let mut config = if path.exists() {
        connect::load_config(&path)?
    } else {
        ClientConfig::default()
    };
    let mut renamed = std::collections::BTreeMap::new();
    for (name, ctx) in incoming.contexts {
        let mut new_name = name.clone();
        let mut n = 1;
        while config.contexts.contains_key(&new_name) {
            new_name = format!("{name}-{n}");
            n += 1;
        }
        if new_name != name {
            println!("context {name:?} exists: added as {new_name:?}");
        }
        renamed.insert(name, new_name.clone());
        config.contexts.insert(new_name, ctx);
    }
    if let Some(current) = incoming.context.and_then(|c| renamed.get(&c).cloned()) {
        config.context = Some(current);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    config.save(&path)?;
    Ok(ExitCode::SUCCESS)
}
