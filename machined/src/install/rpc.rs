//! The API's upgrade, rollback, boot-slot and reset calls, and the health
//! gate's task: the async edge of the blocking disk work in this module.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use slate_common::constants::{EPHEMERAL_LABEL, STATE_LABEL};
use slate_proto::machine::{
    BootSlot, BootSlotsResponse, ResetRequest, ResetResponse, RollbackResponse, UpgradeRequest,
    UpgradeResponse,
};
use tonic::{Status, Streaming};

use super::meta::Slot;
use super::{InstallError, SystemDisk, slots};
use crate::etcd::Etcd;
use crate::power::{Action, Power};
use crate::services::Supervisor;

/// One upgrade, rollback, reset or health-gate verdict at a time: two
/// writers of the slots' record would undo each other. The guard is owned
/// so it can move into the blocking work: a client that hangs up drops the
/// handler, not the disk write, and the next caller waits for that write.
static BUSY: std::sync::LazyLock<Arc<tokio::sync::Mutex<()>>> =
    std::sync::LazyLock::new(|| Arc::new(tokio::sync::Mutex::new(())));

type Busy = tokio::sync::OwnedMutexGuard<()>;

fn busy() -> Result<Busy, Status> {
    Arc::clone(&BUSY).try_lock_owned().map_err(|_| {
        Status::aborted("an upgrade, rollback or reset is already running on this node")
    })
}

fn status(e: InstallError) -> Status {
    let text = format!("{:#}", anyhow::Error::from(e));
    Status::failed_precondition(text)
}

fn system_disk() -> Result<SystemDisk, Status> {
    SystemDisk::find().ok_or_else(|| {
        Status::failed_precondition(
            "the node has no system disk (no STATE partition): apply a config with machine.install first",
        )
    })
}

fn booted() -> Option<Slot> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    slots::booted(&cmdline)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, InstallError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(status)
}

/// Largest bundle a URL may serve.
const URL_MAX: u64 = slate_bundle::FILE_MAX;
/// Where a bundle fetched by URL is kept until it is written (EPHEMERAL
/// when the node has one).
const DOWNLOAD: &str = "/var/lib/slate/upgrade-bundle.tar";

pub async fn upgrade(
    mut stream: Streaming<UpgradeRequest>,
    etcd: Option<&Arc<Etcd>>,
    power: &Power,
) -> Result<UpgradeResponse, Status> {
    let guard = busy()?;
    let first = stream
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("the upgrade stream is empty"))?;
    let options = first.options.unwrap_or_default();
    if !matches!(options.reboot_mode.as_str(), "" | "default" | "powercycle") {
        return Err(Status::invalid_argument(format!(
            "reboot mode {:?}: default or powercycle",
            options.reboot_mode
        )));
    }
    if let Some(etcd) = etcd
        && !options.force
    {
        quorum_without_me(etcd).await.map_err(|why| {
            Status::failed_precondition(format!("{why}; --force to upgrade anyway"))
        })?;
    }
    let system = system_disk()?;
    let booted = booted();
    let (slot, manifest) = if options.url.is_empty() {
        from_stream(first.chunk, stream, system, booted, guard).await?
    } else {
        from_url(&options.url, &options.sha256, system, booted, guard).await?
    };
    tracing::info!(
        "upgrade: Slate {} written to slot {slot}; it boots once at the next boot",
        manifest.version
    );
    let rebooting = !options.stage;
    if rebooting {
        power.request(Action::Reboot);
    }
    Ok(UpgradeResponse {
        slot: slot.name().to_owned(),
        version: manifest.version,
        rebooting,
    })
}

/// Feeds the gRPC stream to the blocking writer through a small channel,
/// so a slow disk holds the client back instead of filling memory.
async fn from_stream(
    first: Vec<u8>,
    mut stream: Streaming<UpgradeRequest>,
    system: SystemDisk,
    booted: Option<Slot>,
    guard: Busy,
) -> Result<(Slot, slate_bundle::Manifest), Status> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    let writer = tokio::task::spawn_blocking(move || {
        let _guard = guard;
        super::upgrade(&system, booted, ChannelReader::new(rx))
    });
    let mut sent = if first.is_empty() {
        Ok(())
    } else {
        tx.send(first).await.map_err(|_| ())
    };
    let mut client_error = None;
    while sent.is_ok() {
        match stream.message().await {
            Ok(Some(m)) => sent = tx.send(m.chunk).await.map_err(|_| ()),
            Ok(None) => break,
            Err(e) => {
                // The writer sees the bundle end early and refuses it.
                client_error = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(status);
    match (written, client_error) {
        (Ok(done), None) => Ok(done),
        (_, Some(e)) => Err(Status::aborted(format!(
            "the upload broke off ({}); nothing changed on the boot slots' bootloader side",
            e.message()
        ))),
        (Err(e), None) => Err(e),
    }
}

async fn from_url(
    url: &str,
    sha256: &str,
    system: SystemDisk,
    booted: Option<Slot>,
    guard: Busy,
) -> Result<(Slot, slate_bundle::Manifest), Status> {
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Status::invalid_argument(
            "a bundle fetched by URL needs its SHA-256 (64 hex digits) pinned",
        ));
    }
    let dest = std::path::PathBuf::from(DOWNLOAD);
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Status::internal(e.to_string()))?;
    }
    let digest = crate::url::download(url, &dest, 0o600, URL_MAX)
        .await
        .map_err(|e| {
            let _ = std::fs::remove_file(&dest);
            Status::unavailable(format!(
                "fetching {}: {:#}",
                crate::url::redacted(url),
                anyhow::Error::from(e)
            ))
        })?;
    if !digest.eq_ignore_ascii_case(sha256) {
        let _ = std::fs::remove_file(&dest);
        return Err(Status::failed_precondition(format!(
            "the bundle at {} has SHA-256 {digest}, not the pinned {sha256}",
            crate::url::redacted(url)
        )));
    }
    blocking(move || {
        let _guard = guard;
        let file = std::fs::File::open(&dest).map_err(|source| InstallError::Io {
            op: "opening",
            path: dest.clone(),
            source,
        })?;
        let done = super::upgrade(&system, booted, file);
        let _ = std::fs::remove_file(&dest);
        done
    })
    .await
}

/// The bundle as the blocking writer reads it: chunks off a channel; the
/// end of the channel is the end of the bundle.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl ChannelReader {
    fn new(rx: tokio::sync::mpsc::Receiver<Vec<u8>>) -> Self {
        Self {
            rx,
            chunk: Vec::new(),
            at: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.blocking_recv() {
                Some(chunk) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Whether etcd keeps its quorum while this node reboots: enough of the
/// other voting members must answer. A cluster of one has no quorum to
/// keep (its only member is this node): its upgrade is allowed, as is a
/// node that is no member (never bootstrapped or joined).
async fn quorum_without_me(etcd: &Etcd) -> Result<(), String> {
    const ASK: Duration = Duration::from_secs(3);
    // Never bootstrapped or joined: no member here to take away.
    if !etcd.has_data() {
        return Ok(());
    }
    let me = etcd.identity()?.peer_url();
    let members = tokio::time::timeout(ASK, async {
        let mut client = etcd.connect_cluster().await?;
        client.members().await
    })
    .await
    .map_err(|_| "etcd did not answer within 3s: cannot tell whether it keeps quorum".to_owned())?
    .map_err(|e| format!("asking etcd for its members: {e}"))?;
    let voters: Vec<_> = members.iter().filter(|m| !m.learner).collect();
    if voters.len() <= 1 || !voters.iter().any(|m| m.peer_urls.contains(&me)) {
        return Ok(());
    }
    let mut healthy = 0;
    for m in voters.iter().filter(|m| !m.peer_urls.contains(&me)) {
        let answered = tokio::time::timeout(ASK, async {
            let mut c = etcd.connect(&m.client_urls).await?;
            c.leader().await
        })
        .await;
        if matches!(answered, Ok(Ok(leader)) if leader != 0) {
            healthy += 1;
        }
    }
    let quorum = voters.len() / 2 + 1;
    if healthy < quorum {
        return Err(format!(
            "etcd would lose quorum while this node reboots: {healthy} of the {} other voting members are healthy, {quorum} are needed",
            voters.len() - 1
        ));
    }
    Ok(())
}

pub async fn rollback(power: &Power) -> Result<RollbackResponse, Status> {
    let guard = busy()?;
    let system = system_disk()?;
    let booted = booted();
    let (slot, version) = blocking(move || {
        let _guard = guard;
        let slot = super::rollback(&system, booted)?;
        let version = system
            .meta()?
            .record
            .slots
            .get(&slot)
            .map(|r| r.version.clone())
            .unwrap_or_default();
        Ok((slot, version))
    })
    .await?;
    tracing::info!("rollback: slot {slot} ({version}) boots next");
    power.request(Action::Reboot);
    Ok(RollbackResponse {
        slot: slot.name().to_owned(),
        version,
    })
}

pub async fn boot_slots() -> Result<BootSlotsResponse, Status> {
    let booted = booted();
    let Some(system) = SystemDisk::find() else {
        return Ok(BootSlotsResponse {
            slots: vec![],
            booted_from_disk: false,
        });
    };
    if !system.has_boot() {
        return Ok(BootSlotsResponse {
            slots: vec![],
            booted_from_disk: false,
        });
    }
    let views = blocking(move || {
        let env = system.boot()?.env()?;
        let meta = system.meta()?;
        Ok(slots::views(&meta.record, booted, &env))
    })
    .await?;
    Ok(BootSlotsResponse {
        slots: views
            .into_iter()
            .map(|v| BootSlot {
                slot: v.slot.name().to_owned(),
                version: v.version,
                state: v.state.name().to_owned(),
                since_unix: v.since,
                reason: v.reason,
                active: v.active,
                next: v.next,
            })
            .collect(),
        booted_from_disk: booted.is_some(),
    })
}

pub async fn reset(
    request: ResetRequest,
    etcd: Option<&Arc<Etcd>>,
    services: &Supervisor,
    power: &Power,
) -> Result<ResetResponse, Status> {
    let guard = busy()?;
    let mut labels: Vec<String> = if request.wipe.is_empty() {
        vec![STATE_LABEL.to_owned(), EPHEMERAL_LABEL.to_owned()]
    } else {
        request
            .wipe
            .iter()
            .map(|l| l.trim().to_uppercase())
            .collect()
    };
    labels.dedup();
    if let Some(bad) = labels
        .iter()
        .find(|l| ![STATE_LABEL, EPHEMERAL_LABEL].contains(&l.as_str()))
    {
        return Err(Status::invalid_argument(format!(
            "--wipe {bad}: only STATE and EPHEMERAL can be wiped"
        )));
    }
    let system = system_disk()?;
    // Checked before etcd is left: a reset that cannot record its wipe
    // must not have taken the member out.
    let probe = system.clone();
    blocking(move || probe.meta().map(drop)).await?;
    if request.graceful
        && let Some(etcd) = etcd
        && etcd.has_data()
    {
        crate::etcd::rpc::leave(etcd, services).await.map_err(|e| {
            Status::failed_precondition(format!(
                "leaving etcd: {} (reset without --graceful to skip it)",
                e.message()
            ))
        })?;
    }
    let wiped = labels.clone();
    blocking(move || {
        let _guard = guard;
        let mut meta = system.meta()?;
        meta.record.wipe = labels;
        meta.save()?;
        Ok(())
    })
    .await?;
    tracing::info!(
        "reset: {} wiped at the next boot, before anything mounts them",
        wiped.join(" and ")
    );
    power.request(if request.shutdown {
        Action::PowerOff
    } else {
        Action::Reboot
    });
    Ok(ResetResponse { wiped })
}

/// The health gate for a slot on trial: judged, and a reboot onto the
/// previous slot when it fails.
pub async fn gate(
    system: SystemDisk,
    slot: Slot,
    node: Arc<crate::node::Node>,
    services: Supervisor,
    etcd: Option<Arc<Etcd>>,
    power: Power,
) {
    tracing::info!(
        "slot {slot} is on trial: it becomes good once the node is healthy, within {}s",
        super::gate::TIMEOUT.as_secs()
    );
    let verdict = super::gate::wait(super::gate::TIMEOUT, super::gate::INTERVAL, || {
        let node = Arc::clone(&node);
        let services = services.clone();
        // A control-plane node whose etcd was never bootstrapped has no
        // member to be healthy.
        let with_etcd = etcd.as_ref().is_some_and(|e| e.has_data());
        async move { health(&node, &services, with_etcd).await }
    })
    .await;
    let failed = verdict.is_err();
    match &verdict {
        Ok(()) => tracing::info!("slot {slot} passed the health gate: it is good"),
        Err(why) => tracing::error!(
            "slot {slot} failed the health gate: {why}; rebooting onto the previous slot"
        ),
    }
    // After any upgrade, rollback or reset in flight: judge re-reads META
    // and drops the verdict if the slot left its trial meanwhile.
    let guard = Arc::clone(&BUSY).lock_owned().await;
    let judged = tokio::task::spawn_blocking(move || {
        let _guard = guard;
        super::judge(&system, slot, verdict)
    })
    .await;
    if let Ok(Err(e)) = judged {
        tracing::error!(
            "recording the health gate's verdict: {:#}",
            anyhow::Error::from(e)
        );
    }
    if failed {
        power.request(Action::Reboot);
    }
}

async fn health(
    node: &crate::node::Node,
    services: &Supervisor,
    with_etcd: bool,
) -> Vec<(&'static str, super::gate::Check)> {
    let config = if node.configs().await.0.is_some() {
        Ok(())
    } else {
        Err("no machine config loaded".to_owned())
    };
    let apid = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect(("127.0.0.1", slate_common::constants::APID_PORT)),
    )
    .await
    .map_err(|_| "no answer".to_owned())
    .and_then(|r| r.map(drop).map_err(|e| e.to_string()));
    let service = |id: &str| match services.status(id) {
        Err(_) => Ok(()),
        Ok(s) if s.is_up() => Ok(()),
        Ok(s) => Err(format!(
            "{}{}",
            s.state.as_str(),
            match s.healthy {
                Some(false) => ", unhealthy",
                _ => "",
            }
        )),
    };
    vec![
        ("config", config),
        ("apid", apid),
        (
            "etcd",
            match (with_etcd, services.status("etcd")) {
                (false, _) => Ok(()),
                // The node has etcd data but the slot runs no etcd (a
                // bundle without its extension layer).
                (true, Err(_)) => Err("not running: the booted slot has no etcd".to_owned()),
                (true, Ok(_)) => service("etcd"),
            },
        ),
        ("kubelet", service("kubelet")),
    ]
}
