//! From flags and the client config to connections: which nodes, which CA,
//! which client certificate.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use slate_client::{self as client, ClientError, Conn, NodeHeader, Target};
use slate_config::clientconfig::ClientConfig;
use slate_pki::tls;
use slate_proto::machine::machine_service_client::MachineServiceClient;

use crate::Global;

/// QEMU's user network (and a node that is still starting) accepts a
/// connection and then drops it; a few quick retries hide that, while a
/// refused certificate fails at once.
const CONNECT_ATTEMPTS: u32 = 6;

pub struct Session {
    /// The nodes the command acts on.
    pub targets: Vec<Target>,
    /// With `-e` and other `-n`: the apid that forwards every call to its
    /// node (a control-plane node's); `None`: each node is dialled.
    via: Option<Vec<Target>>,
    tls: Arc<rustls::ClientConfig>,
}

/// The machine API on a connection.
pub fn machine(conn: Conn) -> MachineServiceClient<Conn> {
    MachineServiceClient::new(conn)
}

fn default_config_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".slate").join("config"))
}

/// The client config file: `--config`, `SLATECONFIG`, else
/// `~/.slate/config`.
pub fn config_path(global: &Global) -> anyhow::Result<PathBuf> {
    global
        .config
        .clone()
        .or_else(default_config_path)
        .context("no client config: pass --config PATH or set SLATECONFIG")
}

/// Reads the client config at `path`.
pub fn load_config(path: &std::path::Path) -> anyhow::Result<ClientConfig> {
    ClientConfig::load(path).with_context(|| {
        format!(
            "loading the client config (create one with `slatectl gen config`, then pass --config {})",
            path.display()
        )
    })
}

/// The context in use: `--context`, else the config's current one, else
/// its only one.
pub fn context_name(
    global: &Global,
    config: &ClientConfig,
    path: &std::path::Path,
) -> anyhow::Result<String> {
    global
        .context
        .clone()
        .or_else(|| config.context.clone())
        .or_else(|| {
            (config.contexts.len() == 1)
                .then(|| config.contexts.keys().next().cloned())
                .flatten()
        })
        .with_context(|| {
            format!(
                "{}: no current context; pass --context NAME",
                path.display()
            )
        })
}

/// Resolves `global` against the client config.
pub fn session(global: &Global) -> anyhow::Result<Session> {
    let parse = |list: &[String]| {
        list.iter()
            .map(|s| slate_client::parse_target(s))
            .collect::<Result<Vec<_>, _>>()
    };
    let flag_endpoints = parse(&global.endpoints)?;
    let flag_nodes = parse(&global.nodes)?;

    if global.insecure {
        let targets = if flag_nodes.is_empty() {
            flag_endpoints
        } else {
            flag_nodes
        };
        if targets.is_empty() {
            bail!("--insecure needs the nodes to talk to: pass -n HOST[:PORT]");
        }
        return Ok(Session {
            targets,
            via: None,
            tls: Arc::new(match &global.cert_fingerprint {
                Some(pin) => tls::client_pinned(pin).context("--cert-fingerprint")?,
                None => tls::client_insecure()?,
            }),
        });
    }

    let path = config_path(global)?;
    let config = load_config(&path)?;
    let name = context_name(global, &config, &path)?;
    let context = config
        .contexts
        .get(&name)
        .with_context(|| format!("{}: no context named {name:?}", path.display()))?;

    let endpoints = if flag_endpoints.is_empty() {
        parse(&context.endpoints)?
    } else {
        flag_endpoints.clone()
    };
    let nodes = if flag_nodes.is_empty() {
        parse(&context.nodes)?
    } else {
        flag_nodes
    };
    // `-e` with other `-n`: the endpoint forwards each call to its node,
    // as talosctl does. `-n` alone (the endpoints from the context) dials
    // each node, as slatectl always has.
    let via = (!flag_endpoints.is_empty() && !nodes.is_empty() && nodes != flag_endpoints)
        .then(|| flag_endpoints.clone());
    let targets = if nodes.is_empty() { endpoints } else { nodes };
    if targets.is_empty() {
        bail!("context {name:?} has no endpoints: pass -e or -n");
    }
    let ca = context
        .ca_pem()
        .with_context(|| format!("{}: context {name:?}", path.display()))?;
    let identity = context
        .identity()
        .with_context(|| format!("{}: context {name:?}", path.display()))?;
    Ok(Session {
        targets,
        via,
        tls: Arc::new(tls::client(&ca, Some(&identity))?),
    })
}

impl Session {
    /// The one node a streaming command follows (`what` names the command
    /// in the error when several are given).
    pub fn single(&self, what: &str) -> anyhow::Result<Target> {
        anyhow::ensure!(
            self.targets.len() == 1,
            "{what} follows one node: pass one -n (got {})",
            self.targets.len()
        );
        Ok(self.targets[0].clone())
    }

    /// [`Session::connect`] with the target named in the error.
    pub async fn connect_to(&self, target: &Target) -> anyhow::Result<Conn> {
        self.connect(target)
            .await
            .map_err(|e| anyhow::anyhow!("{target}: {}", slate_common::error::chain(&e)))
    }

    /// A connection for calls to `target`: to it, or to the first endpoint
    /// that answers, which forwards them.
    pub async fn connect(&self, target: &Target) -> Result<Conn, ClientError> {
        let Some(endpoints) = &self.via else {
            return Ok(client::direct(self.dial(target).await?));
        };
        let header = NodeHeader::to(target)?;
        let mut last = None;
        for endpoint in endpoints {
            match self.dial(endpoint).await {
                Ok(channel) => return Ok(Conn::new(channel, header)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::BadTarget("no endpoint".into())))
    }

    /// Dials `target`, retrying only failures that look transient.
    async fn dial(&self, target: &Target) -> Result<tonic::transport::Channel, ClientError> {
        let mut delay = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            match client::connect(target, self.tls.clone()).await {
                Err(e) if e.is_transient() && attempt < CONNECT_ATTEMPTS => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Runs `call` against every target in turn. Returns the successful
    /// results; failures are printed as they happen and make `ok` false.
    pub async fn for_each<T, F, Fut>(&self, mut call: F) -> (Vec<(Target, T)>, bool)
    where
        F: FnMut(Conn) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let mut results = Vec::new();
        let mut ok = true;
        for target in &self.targets {
            let outcome = match self.connect(target).await {
                Ok(channel) => call(channel).await.map_err(|s| describe_status(&s)),
                Err(e) => Err(slate_common::error::chain(&e)),
            };
            match outcome {
                Ok(v) => results.push((target.clone(), v)),
                Err(e) => {
                    ok = false;
                    eprintln!("error: {target}: {e}");
                }
            }
        }
        (results, ok)
    }
}

fn describe_status(status: &tonic::Status) -> String {
    format!(
        "{}: {}",
        code_name(status.code()),
        slate_common::error::chain(status)
    )
}

fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Unauthenticated => "unauthenticated",
        tonic::Code::PermissionDenied => "permission denied",
        tonic::Code::FailedPrecondition => "failed precondition",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::Unimplemented => "not implemented by the node",
        _ => "error",
    }
}
