//! machined set up as the tests of its socket need it.
// Each test crate uses part of it.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use slate_config::MachineConfig;
use slate_machined::join::Registry;
use slate_machined::node::{Node, Storage};
use slate_machined::power::Power;
use slate_machined::services::Supervisor;
use slate_machined::state::State;
use slate_machined::{Paths, Served, boot, serve};

/// machined serving its socket in `dir`: configured with `config` (kept
/// on a STATE directory in `dir`), or in maintenance mode. `remote`:
/// where it sends signing requests it cannot sign; `registry`: join
/// tokens and registrations, as a control plane with etcd has.
pub async fn machined(
    dir: &Path,
    config: Option<&MachineConfig>,
    remote: Option<String>,
    registry: Option<Arc<Registry>>,
) -> (Paths, Arc<Node>) {
    let mut paths = Paths::under(dir);
    paths.trust_remote = remote;
    let state_dir = dir.join("state");
    std::fs::create_dir(&state_dir).unwrap();
    let state = State::new(&state_dir);
    if let Some(config) = config {
        state.save(config).unwrap();
    }
    let node = boot(
        &paths,
        Storage::Fixed(Some(state.clone())),
        Ok(Some(state)),
        Power::Record(Default::default()),
    )
    .await;
    let mut served = Served::new(
        Arc::clone(&node),
        Supervisor::new(dir.join("cgroups"), None),
    );
    served.registry = registry;
    let socket = paths.clone();
    tokio::spawn(async move { serve(&socket, served).await });
    (paths, node)
}
