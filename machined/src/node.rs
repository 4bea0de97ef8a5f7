//! The node's machine config at run time: what runs, what is staged, and
//! how a new config is applied (`slatectl apply-config`).
//!
//! One writer: every change goes through [`Node`]'s lock, so two clients
//! applying at once are serialized and never interleave a half-applied
//! config. "Applied live" means published to `/run/slate` (where apid and
//! networkd pick it up) and stored on STATE; "reboot" means stored, then
//! init is asked to reboot; "staged" means stored only.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use slate_config::diff::{Change, diff};
use slate_config::{MachineConfig, Mode};
use slate_proto::machine::{ApplyConfigurationResponse, ApplyMode};
use tokio::sync::Mutex;
use tonic::Status;

use crate::Paths;
use crate::power::{Action, Power};
use crate::publish::{Verdict, publish};
use crate::state::State;

/// Where the running config came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    State,
    Url,
    ConfigDrive,
    Api,
    /// What machined had published before it was restarted.
    Published,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::State => "state",
            Self::Url => "url",
            Self::ConfigDrive => "cidata",
            Self::Api => "api",
            Self::Published => "published",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::State,
            Self::Url,
            Self::ConfigDrive,
            Self::Api,
            Self::Published,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// Default of `--timeout` for `--mode try`.
const DEFAULT_TRY_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Node {
    paths: Paths,
    storage: Storage,
    /// The mounted STATE volume, once there is one.
    state: std::sync::Mutex<Option<State>>,
    power: Power,
    inner: Mutex<Inner>,
}

/// Where configs are kept.
#[derive(Debug, Clone)]
pub enum Storage {
    /// The node's disks: STATE is created on the system disk with the
    /// first config, and mounted here.
    Disks { mount_point: std::path::PathBuf },
    /// A fixed STATE (tests), or none at all: configs last until reboot.
    Fixed(Option<State>),
}

#[derive(Default)]
struct Inner {
    running: Option<(MachineConfig, Source)>,
    staged: Option<MachineConfig>,
    /// A `try` in progress: the config to go back to, and the timer.
    rollback: Option<(Option<(MachineConfig, Source)>, tokio::task::AbortHandle)>,
    /// Set for the boot when the disk holds state that did not load
    /// ([`Verdict::Refused`]): no anonymous apply, with or without a
    /// running config.
    refused: Option<String>,
}

impl Node {
    /// `state` is the STATE volume found at boot, if any.
    pub fn new(paths: Paths, storage: Storage, state: Option<State>, power: Power) -> Arc<Self> {
        let state = match &storage {
            Storage::Fixed(fixed) => fixed.clone(),
            Storage::Disks { .. } => state,
        };
        Arc::new(Self {
            paths,
            storage,
            state: std::sync::Mutex::new(state),
            power,
            inner: Mutex::new(Inner::default()),
        })
    }

    fn state(&self) -> Option<State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The STATE volume, created on the system disk if the node has none
    /// yet and `config` allows it.
    async fn ensure_state(&self, config: &MachineConfig) -> Result<Option<State>, String> {
        if let Some(state) = self.state() {
            return Ok(Some(state));
        }
        let Storage::Disks { mount_point } = &self.storage else {
            return Ok(None);
        };
        let (disk, wipe) = (
            config.machine.install.disk.clone(),
            config.machine.install.wipe,
        );
        let mount_point = mount_point.clone();
        let made = tokio::task::spawn_blocking(move || {
            // A STATE that exists but did not mount at boot is mounted, never
            // replaced by a new one.
            let device = match crate::disk::find_state() {
                Some(device) => device,
                None => match crate::disk::create_state(disk.as_deref(), wipe) {
                    Ok(device) => device,
                    Err(crate::disk::DiskError::NoEmptyDisk) => return Ok(None),
                    Err(e) => return Err(e),
                },
            };
            crate::disk::mount_state(&device, &mount_point)?;
            // Booted from the ISO: the disk gets the boot slots too.
            crate::install::install_from_medium(&device);
            Ok::<_, crate::disk::DiskError>(Some(State::new(mount_point)))
        })
        .await
        .map_err(|e| format!("creating STATE: {e}"))?
        .map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
        let Some(made) = made else {
            return Ok(None);
        };
        tracing::info!("STATE mounted");
        if crate::disk::find_state()
            .and_then(|d| crate::disk::find_ephemeral(&d))
            .is_some()
        {
            // Services run on the boot's /var already: moving it under them
            // would hide their files. The next boot mounts it first.
            tracing::info!("EPHEMERAL is ready; /var moves onto it at the next boot");
        }
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = Some(made.clone());
        Ok(Some(made))
    }

    /// Publishes the boot verdict; a valid config becomes the running one
    /// and, when it came from a config drive, is kept on STATE so the next
    /// boot finds it there.
    pub async fn boot(&self, verdict: Verdict, source: Source) {
        if let Some(staged) = self.state().and_then(|s| s.load_staged()) {
            self.inner.lock().await.staged = Some(staged);
        }
        match &verdict {
            Verdict::Valid { config, .. } => {
                self.inner.lock().await.running = Some(((**config).clone(), source));
            }
            Verdict::Refused(why) => self.inner.lock().await.refused = Some(why.clone()),
            _ => {}
        }
        // Publish first: apid and networkd wait for it, and keeping the
        // config (which may partition and format a disk) need not delay them.
        if let Err(e) = publish(&verdict, &self.paths) {
            tracing::error!(
                "publishing the machine config: {:#}",
                anyhow::Error::from(e)
            );
        }
        if let Verdict::Valid { config, .. } = &verdict
            && matches!(source, Source::Url | Source::ConfigDrive)
            && let Err(e) = self.store(config).await
        {
            tracing::warn!("the config is not kept across reboots: {}", e.message());
        }
    }

    pub fn power(&self) -> &Power {
        &self.power
    }

    /// The running config with where it came from, and the staged one.
    pub async fn configs(&self) -> (Option<(MachineConfig, Source)>, Option<MachineConfig>) {
        let inner = self.inner.lock().await;
        (inner.running.clone(), inner.staged.clone())
    }

    /// Validates `data` and applies it as `mode` asks. Nothing changes on
    /// the node unless every check passed.
    /// `anonymous`: apid let the call through because the node was in
    /// maintenance mode; refused if the node has a config by now (apid
    /// switches to mutual TLS a moment after the first config).
    pub async fn apply(
        self: &Arc<Self>,
        data: &[u8],
        mode: ApplyMode,
        dry_run: bool,
        try_timeout: Option<Duration>,
        anonymous: bool,
    ) -> Result<ApplyConfigurationResponse, Status> {
        let new = MachineConfig::parse_bytes(data, "config", Mode::Cloud)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        crate::publish::usable_machine_ca(&new).map_err(Status::invalid_argument)?;
        let mut inner = self.inner.lock().await;
        let running = inner.running.as_ref().map(|(c, _)| c);
        admit(running, inner.refused.as_deref(), &new, anonymous)?;
        let changes = match running {
            Some(old) => diff(old, &new),
            None => Vec::new(),
        };
        let reboot_by: Vec<String> = changes
            .iter()
            .filter(|c| c.needs_reboot())
            .map(|c| c.path().to_owned())
            .collect();
        // A node without a config takes its first one live.
        let mode = effective_mode(mode, &reboot_by)?;
        if matches!(mode, ApplyMode::Staged | ApplyMode::Reboot) && !dry_run {
            self.require_state(&new, mode).await?;
        }
        let first = running.is_none();
        let summary = summary(mode, first, changes.is_empty(), dry_run);
        let response = ApplyConfigurationResponse {
            changes: changes.iter().map(Change::to_string).collect(),
            reboot_required_by: reboot_by,
            summary,
            mode: mode as i32,
        };
        if dry_run {
            return Ok(response);
        }
        self.commit(&mut inner, new, mode, try_timeout).await?;
        Ok(response)
    }

    /// Staged and reboot modes are about the next boot: without STATE to
    /// keep the config on, it would not survive until then.
    async fn require_state(&self, new: &MachineConfig, mode: ApplyMode) -> Result<(), Status> {
        match self.ensure_state(new).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(Status::failed_precondition(format!(
                "--mode {} needs the STATE partition to keep the config across the \
                 reboot, and this node has none",
                mode_name(mode)
            ))),
            Err(e) => Err(Status::failed_precondition(e)),
        }
    }

    /// Carries out an apply that passed every check: stores, stages or
    /// publishes `new` as `mode` (settled by [`effective_mode`]) says.
    async fn commit(
        self: &Arc<Self>,
        inner: &mut Inner,
        new: MachineConfig,
        mode: ApplyMode,
        try_timeout: Option<Duration>,
    ) -> Result<(), Status> {
        // Any successful apply confirms (ends) a try in progress; a failed
        // one leaves it running, timer and all.
        match mode {
            ApplyMode::Staged => {
                self.store_staged(&new).await?;
                self.confirm_try(inner);
                inner.staged = Some(new);
            }
            ApplyMode::Reboot => {
                self.store(&new).await?;
                self.confirm_try(inner);
                // An older staged config would be promoted over `new` at
                // the very boot this asks for.
                if let Some(state) = self.state() {
                    state.clear_staged();
                }
                inner.staged = Some(new);
                self.power.request(Action::Reboot);
            }
            ApplyMode::Try => self.start_try(inner, new, try_timeout),
            ApplyMode::NoReboot | ApplyMode::Auto => {
                self.store(&new).await?;
                self.confirm_try(inner);
                inner.staged = None;
                if let Some(state) = self.state() {
                    state.clear_staged();
                }
                self.go_live(inner, new, Source::Api);
            }
        }
        Ok(())
    }

    /// Puts `new` live on trial and arms the timer that rolls it back
    /// unless another apply confirms it first.
    fn start_try(
        self: &Arc<Self>,
        inner: &mut Inner,
        new: MachineConfig,
        timeout: Option<Duration>,
    ) {
        // Back to what ran before the first try of a series.
        let rollback_to = match inner.rollback.take() {
            Some((before, timer)) => {
                timer.abort();
                before
            }
            None => inner.running.clone(),
        };
        // Live only: a reboot during the try boots what STATE holds.
        self.go_live(inner, new, Source::Api);
        let timeout = timeout.unwrap_or(DEFAULT_TRY_TIMEOUT);
        let trial = crate::trial::Trial {
            deadline: SystemTime::now() + timeout,
            rollback_to: rollback_to.clone(),
        };
        if let Err(e) = crate::trial::save(&self.paths.try_record, &trial) {
            tracing::error!(
                "{}; a restart of machined would keep the try config",
                slate_common::error::chain(&e)
            );
        }
        self.arm_rollback(inner, rollback_to, timeout);
    }

    fn arm_rollback(
        self: &Arc<Self>,
        inner: &mut Inner,
        rollback_to: Option<(MachineConfig, Source)>,
        after: Duration,
    ) {
        let node = Arc::clone(self);
        let timer = tokio::spawn(async move {
            tokio::time::sleep(after).await;
            node.roll_back().await;
        });
        inner.rollback = Some((rollback_to, timer.abort_handle()));
    }

    /// Ends a `try` in progress: its config stays, and its timer stops.
    fn confirm_try(&self, inner: &mut Inner) {
        if let Some((_, timer)) = inner.rollback.take() {
            timer.abort();
            crate::trial::remove(&self.paths.try_record);
        }
    }

    /// After a restart of machined: a `try` that was in progress rolls back
    /// when it would have, or now if that time has passed.
    pub async fn resume_try(self: &Arc<Self>) {
        let Some(trial) = crate::trial::load(&self.paths.try_record) else {
            return;
        };
        let left = trial
            .deadline
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tracing::info!(
            "a try-mode config is in progress: it rolls back in {} s unless confirmed",
            left.as_secs()
        );
        let mut inner = self.inner.lock().await;
        self.arm_rollback(&mut inner, trial.rollback_to, left);
    }

    /// Keeps `config` on STATE (created if need be) as the one to boot.
    /// On a node with no disk for STATE the config still applies, until
    /// the next boot, and the console says so; a disk on which STATE
    /// cannot be made or mounted fails the call instead.
    async fn store(&self, config: &MachineConfig) -> Result<(), Status> {
        self.store_with(config, State::save).await
    }

    /// Keeps `config` on STATE for the next boot, beside the current one.
    async fn store_staged(&self, config: &MachineConfig) -> Result<(), Status> {
        self.store_with(config, State::save_staged).await
    }

    async fn store_with(
        &self,
        config: &MachineConfig,
        save: fn(&State, &MachineConfig) -> Result<(), crate::state::StateError>,
    ) -> Result<(), Status> {
        match self.ensure_state(config).await {
            Ok(Some(state)) => save(&state, config)
                .map_err(|e| Status::internal(format!("{:#}", anyhow::Error::from(e)))),
            Ok(None) => {
                tracing::warn!("no STATE partition: the config lasts until the next boot");
                Ok(())
            }
            // A disk that should hold STATE and does not (it would not
            // partition, format or mount): saying "applied" would lose the
            // config at the next boot without a word.
            Err(e) => Err(Status::failed_precondition(format!(
                "keeping the config on STATE: {e}; nothing was applied"
            ))),
        }
    }

    fn go_live(&self, inner: &mut Inner, config: MachineConfig, source: Source) {
        let verdict = Verdict::valid(config.clone());
        if let Err(e) = publish(&verdict, &self.paths) {
            tracing::error!(
                "publishing the machine config: {:#}",
                anyhow::Error::from(e)
            );
        }
        inner.running = Some((config, source));
    }

    /// The `try` timer ran out unconfirmed: back to the config before it.
    async fn roll_back(&self) {
        let mut inner = self.inner.lock().await;
        let Some((before, _)) = inner.rollback.take() else {
            return;
        };
        crate::trial::remove(&self.paths.try_record);
        match before {
            Some((config, source)) => {
                tracing::warn!("try-mode config not confirmed in time: rolling back");
                self.go_live(&mut inner, config, source);
            }
            None => {
                tracing::warn!("try-mode config not confirmed in time: back to maintenance mode");
                inner.running = None;
                if let Err(e) = publish(&Verdict::Missing, &self.paths) {
                    tracing::error!("publishing: {:#}", anyhow::Error::from(e));
                }
            }
        }
    }
}

/// Refuses a config the node must not take from this caller: any config
/// without a client certificate once the node has one, and a config of
/// another cluster (its machine CA differs) ever.
fn admit(
    running: Option<&MachineConfig>,
    refused: Option<&str>,
    new: &MachineConfig,
    anonymous: bool,
) -> Result<(), Status> {
    if let Some(why) = refused
        && anonymous
    {
        return Err(Status::permission_denied(format!(
            "{why}: apply-config needs a client certificate of the node's machine CA"
        )));
    }
    if anonymous && running.is_some() {
        return Err(Status::permission_denied(
            "the node has a config: apply-config needs a client certificate of its machine CA",
        ));
    }
    if let Some(old) = running
        && old.machine.ca.crt != new.machine.ca.crt
    {
        return Err(Status::failed_precondition(
            "this config belongs to another cluster: its machine CA (machine.ca.crt) is not \
             the node's; reset the node to move it to another cluster",
        ));
    }
    Ok(())
}

/// Settles `Auto` by whether any change (`reboot_by` names them) needs a
/// reboot, and refuses a mode that cannot carry such changes out.
fn effective_mode(mode: ApplyMode, reboot_by: &[String]) -> Result<ApplyMode, Status> {
    let needs_reboot = !reboot_by.is_empty();
    Ok(match mode {
        ApplyMode::Auto if needs_reboot => ApplyMode::Reboot,
        ApplyMode::Auto => ApplyMode::NoReboot,
        ApplyMode::NoReboot | ApplyMode::Try if needs_reboot => {
            return Err(Status::failed_precondition(format!(
                "these changes need a reboot, which --mode {} does not allow: {}",
                mode_name(mode),
                reboot_by.join(", ")
            )));
        }
        other => other,
    })
}

fn mode_name(mode: ApplyMode) -> &'static str {
    match mode {
        ApplyMode::Auto => "auto",
        ApplyMode::NoReboot => "no-reboot",
        ApplyMode::Reboot => "reboot",
        ApplyMode::Staged => "staged",
        ApplyMode::Try => "try",
    }
}

fn summary(mode: ApplyMode, first: bool, unchanged: bool, dry_run: bool) -> String {
    let what = match (first, unchanged) {
        (true, _) => "the node's first config",
        (false, true) => "a config identical to the running one",
        (false, false) => "the config",
    };
    let how = match mode {
        ApplyMode::NoReboot | ApplyMode::Auto => "applied live",
        ApplyMode::Reboot => "saved; the node reboots into it",
        ApplyMode::Staged => "staged for the next boot",
        ApplyMode::Try => "applied live on trial; it rolls back unless confirmed by another apply",
    };
    if dry_run {
        format!("dry run: {what} would be {how}")
    } else {
        format!("{what}: {how}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(dir: &std::path::Path) -> Paths {
        Paths::under(dir)
    }

    #[tokio::test]
    async fn a_reboot_apply_is_what_the_next_boot_runs_even_after_a_staged_one() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        std::fs::create_dir(&state_dir).unwrap();
        let state = State::new(&state_dir);
        let base = slate_config::generate::generate(&slate_config::generate::Options {
            cluster_name: "t".into(),
            endpoint: "https://10.0.0.1:6443".into(),
            ..Default::default()
        })
        .unwrap()
        .worker;
        let named = |host: &str| {
            let mut c = base.clone();
            c.machine.network.hostname = Some(host.into());
            c.to_yaml().unwrap()
        };
        let node = Node::new(
            paths(dir.path()),
            Storage::Fixed(Some(state.clone())),
            None,
            Power::Record(Default::default()),
        );
        node.boot(Verdict::valid(base.clone()), Source::State).await;
        node.apply(
            named("staged").as_bytes(),
            ApplyMode::Staged,
            false,
            None,
            false,
        )
        .await
        .unwrap();
        node.apply(
            named("rebooted").as_bytes(),
            ApplyMode::Reboot,
            false,
            None,
            false,
        )
        .await
        .unwrap();
        // The next boot, as machined's boot() does it.
        state.promote_staged().unwrap();
        let next = state.load().unwrap();
        assert_eq!(next.machine.network.hostname.as_deref(), Some("rebooted"));
    }

    #[tokio::test]
    async fn an_anonymous_apply_is_refused_once_the_node_has_a_config() {
        let dir = tempfile::tempdir().unwrap();
        let config = slate_config::generate::generate(&slate_config::generate::Options {
            cluster_name: "t".into(),
            endpoint: "https://10.0.0.1:6443".into(),
            ..Default::default()
        })
        .unwrap()
        .worker;
        let yaml = config.to_yaml().unwrap();
        let node = Node::new(
            paths(dir.path()),
            Storage::Fixed(None),
            None,
            Power::Record(Default::default()),
        );
        node.boot(Verdict::Missing, Source::ConfigDrive).await;
        // Maintenance mode: the first config may come without a certificate.
        node.apply(yaml.as_bytes(), ApplyMode::Auto, false, None, true)
            .await
            .unwrap();
        // apid may not have switched to mutual TLS yet: machined refuses.
        let err = node
            .apply(yaml.as_bytes(), ApplyMode::Auto, false, None, true)
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
        node.apply(yaml.as_bytes(), ApplyMode::Auto, true, None, false)
            .await
            .unwrap();
    }
}
