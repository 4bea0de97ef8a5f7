//! Waiting for a node's API the way a careful client does: after apid's
//! ready line, one connection at a time, until `Version` answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use slate_client::{self as client, Target};
use slate_config::clientconfig::ClientConfig;
use slate_config::generate::{self, Bundle, Options};
use slate_proto::machine::{VersionRequest, VersionResponse};

use crate::qemu::Vm;

/// apid's console line once it listens (see apid's `serve`).
pub const READY_LINE: &str = "serving the API on";

/// Waits for the ready line, then for a `Version` answer over `tls`.
/// On timeout the error carries the last 80 console lines.
pub async fn wait_for_version(
    vm: &mut Vm,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> anyhow::Result<VersionResponse> {
    let deadline = Instant::now() + timeout;
    vm.wait_for_boot_line(READY_LINE, deadline, 80)
        .await
        .context("apid never became ready")?;
    let target = slate_client::parse_target(&vm.endpoint())?;
    let mut last_error = String::new();
    while Instant::now() < deadline {
        match version(&target, tls.clone()).await {
            Ok(v) => return Ok(v),
            Err(e) => last_error = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "no Version answer ({last_error}); console:\n{}",
        vm.console_tail(80)
    )
}

/// One `Version` call on a fresh connection.
pub async fn version(
    target: &Target,
    tls: Arc<rustls::ClientConfig>,
) -> anyhow::Result<VersionResponse> {
    let channel = client::connect(target, tls).await?;
    Ok(client::machine(channel)
        .version(VersionRequest {})
        .await?
        .into_inner())
}

/// The specs of every resource of `kind` (`links`, `addresses`, …), read
/// with `slatectl get`'s List on a fresh connection.
pub async fn list(
    target: &Target,
    tls: Arc<rustls::ClientConfig>,
    kind: &str,
) -> anyhow::Result<Vec<serde_json::Value>> {
    use slate_proto::resource::ListRequest;
    use slate_proto::resource::resource_service_client::ResourceServiceClient;
    let channel = client::connect(target, tls).await?;
    let resources = ResourceServiceClient::new(channel)
        .list(ListRequest {
            r#type: kind.into(),
        })
        .await?
        .into_inner()
        .resources;
    resources
        .iter()
        .map(|r| serde_json::from_str(&r.spec_json).with_context(|| format!("{kind} {}", r.id)))
        .collect()
}

/// The node's processes, as `slatectl processes` lists them.
pub async fn processes(
    target: &Target,
    tls: Arc<rustls::ClientConfig>,
) -> anyhow::Result<Vec<slate_proto::machine::Process>> {
    use slate_proto::machine::ProcessesRequest;
    let channel = client::connect(target, tls).await?;
    Ok(client::machine(channel)
        .processes(ProcessesRequest {})
        .await?
        .into_inner()
        .processes)
}

/// The kernel log as `slatectl dmesg` reads it (Dmesg, not following), on
/// a fresh connection.
pub async fn dmesg(target: &Target, tls: Arc<rustls::ClientConfig>) -> anyhow::Result<Vec<String>> {
    use slate_proto::machine::DmesgRequest;
    let channel = client::connect(target, tls).await?;
    let mut stream = client::machine(channel)
        .dmesg(DmesgRequest {
            follow: false,
            tail: None,
        })
        .await?
        .into_inner();
    let mut lines = Vec::new();
    while let Some(line) = stream.message().await? {
        lines.push(line.line);
    }
    Ok(lines)
}

/// A generated cluster `name` whose nodes are reached through QEMU's
/// forward on loopback: its endpoint and apid's extra name are 127.0.0.1.
pub fn loopback_cluster(name: &str) -> anyhow::Result<Bundle> {
    generate::generate(&Options {
        cluster_name: name.into(),
        endpoint: "https://127.0.0.1:6443".into(),
        additional_sans: vec!["127.0.0.1".into()],
        client_endpoints: vec![],
        install_disk: None,
        secrets: None,
    })
    .context("generating a cluster")
}

/// The TLS identity of context `name` of a client config (the admin's,
/// in a generated one).
pub fn context_tls(client: &ClientConfig, name: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let ctx = client
        .contexts
        .get(name)
        .with_context(|| format!("no context {name:?} in the client config"))?;
    Ok(Arc::new(slate_pki::tls::client(
        &ctx.ca_pem()?,
        Some(&ctx.identity()?),
    )?))
}
