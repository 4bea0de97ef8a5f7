//! The control plane's side of joining: join tokens, registrations and
//! their acceptance, over the cluster's [`Store`].
//!
//! A registration is refused (and logged, once a minute per source) when
//! its signature does not hold for the node key it carries, its token is
//! unknown (revoked, another cluster's, forged), expired or has another
//! secret, its machine id was registered with another node key, or it is
//! not newer than the last one of that machine (a replay). Nothing is
//! written for a refused registration.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prost::Message as _;
use slate_common::ratelimit::{LogLimiter, held_back};
use slate_config::join::{JoinToken, hex, parse_role, role_name};
use slate_config::patch::Patch;
use slate_config::{MachineConfig, MachineType, Mode};
use slate_proto::join::{CreateTokenRequest, CreateTokenResponse, JoinToken as TokenInfo, Machine};
use slate_proto::trust::{RegisterRequest, RegisterResponse, Registration};
use tonic::Status;

use super::records::{Facts, MACHINES, MachineRecord, MachineState, TOKENS, TokenRecord, now_unix};
use super::store::{Store, StoreError};

/// The largest registration read (facts are bounded further when kept).
pub const MAX_REGISTRATION: usize = 16 * 1024;
/// How soon a pending machine asks again.
pub const PENDING_RETRY: Duration = Duration::from_secs(2);
/// How soon a rejected machine asks again.
pub const REJECTED_RETRY: Duration = Duration::from_secs(60);
/// How often a source's refusals are logged.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);
/// Attempts at a conditional write that another node's write overtook.
const WRITE_ATTEMPTS: usize = 5;
/// How often a waiting machine's record is written when nothing but the
/// time changed (seconds).
const SEEN_WRITE_EVERY: u64 = 60;
/// Machines one token may have waiting.
pub const MAX_PENDING_PER_TOKEN: usize = 64;
/// Replay marks kept in memory.
const MAX_SEEN: usize = 4096;

pub struct Registry {
    store: Store,
    refusals: Mutex<LogLimiter>,
    /// Machine id → the newest `sent_at_ms` seen here.
    seen: Mutex<std::collections::HashMap<String, u64>>,
}

fn unavailable(e: StoreError) -> Status {
    Status::unavailable(format!("the cluster's etcd: {e}"))
}

fn role_of(text: &str) -> Result<MachineType, Status> {
    parse_role(text)
        .ok_or_else(|| Status::invalid_argument(format!("role {text:?}: worker or controlplane")))
}

/// The config a machine of `role` gets: made from the control plane's
/// `config` ([`slate_config::generate::for_role`]), then each of `patches`
/// (YAML, empty ones skipped) applied and the result validated.
pub fn config_for(
    config: &MachineConfig,
    role: MachineType,
    patches: &[String],
) -> Result<MachineConfig, String> {
    let base = slate_config::generate::for_role(config, role);
    let parsed = patches
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.trim().is_empty())
        .map(|(i, p)| {
            let name = format!("config patch #{}", i + 1);
            Patch::parse(p, &name).map(|patch| (name, patch))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| slate_common::error::chain(&e))?;
    slate_config::patch::apply(&base, &parsed, Mode::Cloud)
        .map_err(|e| slate_common::error::chain(&e))
}

/// A machine's id: 16 hex digits of its node key's SHA-256. The key is
/// what the machine proves at every call; a UUID is only what it says.
pub fn machine_id(node_key: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, node_key);
    hex(&digest.as_ref()[..8])
}

impl Registry {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            refusals: Mutex::new(LogLimiter::new(REFUSAL_LOG_EVERY)),
            seen: Mutex::new(std::collections::HashMap::new()),
        }
    }

    async fn read<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, i64)>, Status> {
        let Some((bytes, rev)) = self.store.get(key).await.map_err(unavailable)? else {
            return Ok(None);
        };
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| Status::internal(format!("{key} in etcd does not parse: {e}")))?;
        Ok(Some((value, rev)))
    }

    async fn write<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
        rev: i64,
    ) -> Result<bool, Status> {
        let bytes = serde_json::to_vec(value).map_err(|e| Status::internal(e.to_string()))?;
        self.store
            .put_if(key, bytes, rev)
            .await
            .map_err(unavailable)
    }

    async fn list<T: serde::de::DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>, Status> {
        let entries = self.store.list(prefix).await.map_err(unavailable)?;
        Ok(entries
            .into_iter()
            .filter_map(|(key, bytes)| match serde_json::from_slice(&bytes) {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::warn!("{key} in etcd does not parse, left out: {e}");
                    None
                }
            })
            .collect())
    }

    /// Makes a token; `config` is this control-plane node's (the CA the
    /// join URL pins, the endpoint it names, the secrets patches apply to).
    pub async fn create_token(
        &self,
        config: &MachineConfig,
        request: CreateTokenRequest,
    ) -> Result<CreateTokenResponse, Status> {
        let role = role_of(&request.role)?;
        // A patch that would make an invalid config is refused now, not
        // when a machine is waiting for it.
        config_for(config, role, std::slice::from_ref(&request.config_patch))
            .map_err(|e| Status::invalid_argument(format!("--config-patch: {e}")))?;
        let token = JoinToken::generate().map_err(|e| Status::internal(e.to_string()))?;
        let now = now_unix();
        let record = TokenRecord {
            id: token.id.clone(),
            secret_sha256: token.secret_digest(),
            role: role_name(role).to_owned(),
            created_unix: now,
            expires_unix: if request.ttl_seconds == 0 {
                0
            } else {
                now.saturating_add(request.ttl_seconds)
            },
            auto_accept: request.auto_accept,
            config_patch: request.config_patch,
        };
        if !self
            .write(&format!("{TOKENS}{}", token.id), &record, 0)
            .await?
        {
            return Err(Status::aborted("a token with that id exists; try again"));
        }
        let join_url = service_url(config)?;
        let kernel_arg = format!(
            "slate.join={}",
            slate_config::join::JoinUrl::parse(&join_url, Some(&token))
                .map_err(|e| Status::internal(e.to_string()))?
        );
        tracing::info!(
            "join token {} made ({}, {}{})",
            record.id,
            record.role,
            if record.auto_accept {
                "auto-accept, "
            } else {
                ""
            },
            match record.expires_unix {
                0 => "no expiry".to_owned(),
                t => format!("expires at {t}"),
            }
        );
        Ok(CreateTokenResponse {
            token: Some(record.info()),
            secret: token.to_string(),
            join_url,
            kernel_arg,
        })
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, Status> {
        Ok(self
            .list::<TokenRecord>(TOKENS)
            .await?
            .iter()
            .map(TokenRecord::info)
            .collect())
    }

    pub async fn revoke_token(&self, id: &str) -> Result<(), Status> {
        if !self
            .store
            .delete(&format!("{TOKENS}{id}"))
            .await
            .map_err(unavailable)?
        {
            return Err(Status::not_found(format!("no join token {id:?}")));
        }
        tracing::info!("join token {id} revoked");
        Ok(())
    }

    pub async fn list_machines(&self) -> Result<Vec<Machine>, Status> {
        Ok(self
            .list::<MachineRecord>(MACHINES)
            .await?
            .iter()
            .map(MachineRecord::info)
            .collect())
    }

    /// Reads machine `id`, lets `change` decide its new record, and writes
    /// it, again if another write came first.
    async fn update<F>(&self, id: &str, mut change: F) -> Result<MachineRecord, Status>
    where
        F: FnMut(MachineRecord) -> Result<MachineRecord, Status>,
    {
        let key = format!("{MACHINES}{id}");
        for _ in 0..WRITE_ATTEMPTS {
            let (record, rev) = self
                .read::<MachineRecord>(&key)
                .await?
                .ok_or_else(|| Status::not_found(format!("no registered machine {id:?}")))?;
            let new = change(record)?;
            if self.write(&key, &new, rev).await? {
                return Ok(new);
            }
        }
        Err(Status::aborted(format!(
            "machine {id} kept changing while it was written; try again"
        )))
    }

    pub async fn accept(
        &self,
        config: &MachineConfig,
        id: &str,
        role: &str,
        patch: &str,
    ) -> Result<Machine, Status> {
        let role = (!role.is_empty()).then(|| role_of(role)).transpose()?;
        let record = self
            .update(id, |mut m| {
                if m.state != MachineState::Pending {
                    return Err(Status::failed_precondition(format!(
                        "machine {id} is {}, not pending",
                        m.state.as_str()
                    )));
                }
                if let Some(role) = role {
                    m.role = role_name(role).to_owned();
                }
                let mut patches = m.patches.clone();
                patches.push(patch.to_owned());
                config_for(config, role_of(&m.role)?, &patches)
                    .map_err(|e| Status::invalid_argument(format!("--config-patch: {e}")))?;
                m.patches = patches;
                m.state = MachineState::Accepted;
                Ok(m)
            })
            .await?;
        tracing::info!("machine {id} accepted as {}", record.role);
        Ok(record.info())
    }

    pub async fn reject(&self, id: &str) -> Result<(), Status> {
        self.update(id, |mut m| {
            m.state = MachineState::Rejected;
            Ok(m)
        })
        .await?;
        tracing::info!("machine {id} rejected");
        Ok(())
    }

    pub async fn forget(&self, id: &str) -> Result<(), Status> {
        if !self
            .store
            .delete(&format!("{MACHINES}{id}"))
            .await
            .map_err(unavailable)?
        {
            return Err(Status::not_found(format!("no registered machine {id:?}")));
        }
        tracing::info!("machine {id} forgotten");
        Ok(())
    }

    /// Logs a refused registration from `source` (at most once a minute
    /// per source) and returns it.
    fn refuse(&self, source: &str, status: Status) -> Status {
        let mut limiter = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = limiter.allow(source, Instant::now()) {
            tracing::warn!(
                "join: refused a registration from {source}: {}{}",
                status.message(),
                held_back(held)
            );
        }
        status
    }

    /// A node's registration, from `source`: checked, recorded, and
    /// answered with its state (and its config once accepted).
    ///
    /// A machine is its node key: its id is the key's digest, so another
    /// machine reporting the same SMBIOS UUID (a clone, a placeholder
    /// UUID, or someone copying a victim's) registers as a machine of its
    /// own, and the admin tells them apart by the key fingerprint the
    /// node prints. The token is checked when a machine registers first;
    /// after that the node key proves it (a token that expires or is
    /// revoked while the machine waits does not strand it).
    pub async fn register(
        &self,
        config: &MachineConfig,
        request: RegisterRequest,
        source: &str,
    ) -> Result<RegisterResponse, Status> {
        let registration = match signed(&request) {
            Ok(registration) => registration,
            Err(status) => return Err(self.refuse(source, status)),
        };
        let facts = Facts::from(registration.facts.clone().unwrap_or_default());
        let id = machine_id(&registration.node_key);
        let key = format!("{MACHINES}{id}");
        let now = now_unix();
        for _ in 0..WRITE_ATTEMPTS {
            let (record, rev, token_id) = match self.read::<MachineRecord>(&key).await? {
                None => {
                    let token = match self.check_token(&registration.token).await {
                        Ok(token) => token,
                        Err(status) => return Err(self.refuse(source, status)),
                    };
                    self.room_for(&token)
                        .await
                        .map_err(|s| self.refuse(source, s))?;
                    let record = MachineRecord {
                        id: id.clone(),
                        state: if token.auto_accept {
                            MachineState::Accepted
                        } else {
                            MachineState::Pending
                        },
                        role: token.role.clone(),
                        token_id: token.id.clone(),
                        node_key: hex(&registration.node_key),
                        last_sent_at_ms: registration.sent_at_ms,
                        facts: facts.clone(),
                        first_seen_unix: now,
                        last_seen_unix: now,
                        source: source.to_owned(),
                        patches: vec![token.config_patch.clone()],
                        node_token_sha256: String::new(),
                        kubelet_token: String::new(),
                    };
                    (record, 0, token.id)
                }
                Some((mut m, rev)) => {
                    let last = self.last_sent(&id).max(m.last_sent_at_ms);
                    if registration.sent_at_ms <= last {
                        return Err(self.refuse(
                            source,
                            Status::permission_denied(format!(
                                "a replayed registration of machine {id} (not newer than the last)"
                            )),
                        ));
                    }
                    self.mark_sent(&id, registration.sent_at_ms);
                    // Asking again while pending or rejected changes
                    // nothing but the time: written at most once a
                    // minute, so a waiting machine costs etcd little.
                    let unchanged = m.facts == facts && m.source == source;
                    if unchanged && now.saturating_sub(m.last_seen_unix) < SEEN_WRITE_EVERY {
                        return self.answer(config, m).await;
                    }
                    m.last_sent_at_ms = registration.sent_at_ms;
                    m.last_seen_unix = now;
                    m.facts = facts.clone();
                    m.source = source.to_owned();
                    let token_id = m.token_id.clone();
                    (m, rev, token_id)
                }
            };
            if self.write(&key, &record, rev).await? {
                if rev == 0 {
                    self.mark_sent(&id, registration.sent_at_ms);
                    tracing::info!(
                        "join: machine {id} ({}) registered from {source} with token {token_id}: {}",
                        record.facts.hostname,
                        record.state.as_str()
                    );
                }
                return self.answer(config, record).await;
            }
        }
        Err(Status::aborted("the registration raced; ask again"))
    }

    /// The newest `sent_at_ms` this node saw of machine `id` (the record
    /// in etcd is written at most once a minute).
    fn last_sent(&self, id: &str) -> u64 {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(id).copied().unwrap_or(0)
    }

    fn mark_sent(&self, id: &str, sent_at_ms: u64) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_SEEN && !seen.contains_key(id) {
            // Bounded; etcd's mark (at most a minute old) still holds.
            seen.clear();
        }
        seen.insert(id.to_owned(), sent_at_ms);
    }

    /// A token may have at most [`MAX_PENDING_PER_TOKEN`] machines waiting:
    /// whoever holds it cannot fill etcd with registrations.
    async fn room_for(&self, token: &TokenRecord) -> Result<(), Status> {
        let waiting = self
            .list::<MachineRecord>(MACHINES)
            .await?
            .iter()
            .filter(|m| m.token_id == token.id && m.state == MachineState::Pending)
            .count();
        if waiting >= MAX_PENDING_PER_TOKEN {
            return Err(Status::resource_exhausted(format!(
                "join token {} has {waiting} machines waiting to be accepted already",
                token.id
            )));
        }
        Ok(())
    }

    /// The token of a first registration: known here, with the secret
    /// shown, not expired.
    async fn check_token(&self, text: &str) -> Result<TokenRecord, Status> {
        let token = JoinToken::parse(text)
            .map_err(|_| Status::unauthenticated("the join token is not ID.SECRET"))?;
        let record = self
            .read::<TokenRecord>(&format!("{TOKENS}{}", token.id))
            .await?
            .map(|(r, _)| r)
            .filter(|r| token.matches(&r.secret_sha256))
            .ok_or_else(|| {
                Status::unauthenticated(format!(
                    "join token {} is not valid here (revoked, forged, or another cluster's)",
                    token.id
                ))
            })?;
        if record.expired(now_unix()) {
            return Err(Status::unauthenticated(format!(
                "join token {} expired",
                token.id
            )));
        }
        Ok(record)
    }

    async fn answer(
        &self,
        config: &MachineConfig,
        record: MachineRecord,
    ) -> Result<RegisterResponse, Status> {
        let id = record.id.clone();
        let retry = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        match record.state {
            MachineState::Pending => Ok(RegisterResponse {
                machine_id: id,
                state: record.state.as_str().into(),
                config: Vec::new(),
                retry_after_ms: retry(PENDING_RETRY),
            }),
            MachineState::Rejected => Ok(RegisterResponse {
                machine_id: id,
                state: record.state.as_str().into(),
                config: Vec::new(),
                retry_after_ms: retry(REJECTED_RETRY),
            }),
            // Joined: handed out again to the node key that proved itself
            // (it may have lost it to a crash before it applied it).
            MachineState::Accepted | MachineState::Joined => {
                let role = role_of(&record.role)?;
                let mut made = config_for(config, role, &record.patches).map_err(|e| {
                    Status::failed_precondition(format!("making machine {id}'s config: {e}"))
                })?;
                // A worker gets a machine token of its own instead of the
                // cluster's: with it the trust service signs only this
                // machine's registered names (`node_names`), so root on the
                // worker cannot have a certificate made for another node's
                // address. Control-plane nodes check the cluster's token
                // and keep it.
                let own_token = (role == MachineType::Worker)
                    .then(JoinToken::generate)
                    .transpose()
                    .map_err(|e| Status::internal(e.to_string()))?;
                if let Some(token) = &own_token {
                    made.machine.token = token.to_string();
                }
                let yaml = made
                    .to_yaml()
                    .map_err(|e| Status::internal(format!("writing machine {id}'s config: {e}")))?;
                let digest = own_token.as_ref().map(JoinToken::secret_digest);
                // Only if it is still accepted (or joined): a `machine
                // reject` that came meanwhile wins, and nothing is handed
                // over.
                self.update(&id, |mut m| match m.state {
                    MachineState::Accepted | MachineState::Joined => {
                        m.state = MachineState::Joined;
                        m.node_token_sha256 = digest.clone().unwrap_or_default();
                        m.kubelet_token = own_token
                            .as_ref()
                            .map(JoinToken::to_string)
                            .unwrap_or_default();
                        Ok(m)
                    }
                    other => Err(Status::failed_precondition(format!(
                        "machine {id} is {} now",
                        other.as_str()
                    ))),
                })
                .await?;
                if record.state == MachineState::Accepted {
                    tracing::info!("join: machine {id} has its {} config", record.role);
                }
                Ok(RegisterResponse {
                    machine_id: id,
                    state: MachineState::Joined.as_str().into(),
                    config: yaml.into_bytes(),
                    retry_after_ms: 0,
                })
            }
        }
    }

    /// The machine tokens of the joined workers, by machine id: each is
    /// its kubelet's bootstrap token, which the API server must know.
    pub async fn kubelet_tokens(&self) -> Result<Vec<(String, String)>, Status> {
        let machines = self.list::<MachineRecord>(MACHINES).await?;
        Ok(machines
            .into_iter()
            .filter(|m| m.state == MachineState::Joined && !m.kubelet_token.is_empty())
            .map(|m| (m.id, m.kubelet_token))
            .collect())
    }

    /// The names a joined worker's own machine token lets the trust service
    /// sign: its registered hostname and addresses. `None` when `shown` is
    /// no joined machine's token.
    pub async fn node_names(&self, shown: &str) -> Result<Option<Vec<String>>, Status> {
        let Ok(token) = JoinToken::parse(shown) else {
            return Ok(None);
        };
        let machines = self.list::<MachineRecord>(MACHINES).await?;
        Ok(machines
            .into_iter()
            .find(|m| {
                m.state == MachineState::Joined
                    && !m.node_token_sha256.is_empty()
                    && token.matches(&m.node_token_sha256)
            })
            .map(|m| {
                let mut names = m.facts.addresses;
                names.push(m.facts.hostname);
                names
            }))
    }
}

/// The registration `request` carries, if its signature holds for the node
/// key it names.
fn signed(request: &RegisterRequest) -> Result<Registration, Status> {
    if request.registration.len() > MAX_REGISTRATION {
        return Err(Status::invalid_argument(format!(
            "a registration is at most {MAX_REGISTRATION} bytes"
        )));
    }
    let registration = Registration::decode(request.registration.as_slice())
        .map_err(|e| Status::invalid_argument(format!("the registration does not decode: {e}")))?;
    if registration.node_key.len() != 32 {
        return Err(Status::invalid_argument(
            "the node key is not an Ed25519 key",
        ));
    }
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &registration.node_key)
        .verify(&request.registration, &request.signature)
        .map_err(|_| Status::unauthenticated("the registration's signature does not hold"))?;
    Ok(registration)
}

/// The join URL of this control plane, without a token: the control-plane
/// endpoint's host on the trust port, and the machine CA's digest.
pub fn service_url(config: &MachineConfig) -> Result<String, Status> {
    let target = crate::trust::service_target(config)?;
    let ca = config
        .machine
        .ca
        .crt_pem()
        .ok()
        .and_then(|pem| slate_pki::pem_to_der(&pem).ok())
        .ok_or_else(|| Status::internal("machine.ca.crt does not parse"))?;
    Ok(slate_config::join::service_url(&target, &ca))
}
