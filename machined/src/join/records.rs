//! What is kept in etcd for join tokens and registered machines (JSON
//! under [`TOKENS`] and [`MACHINES`]), and how it is shown.

use serde::{Deserialize, Serialize};
use slate_proto::join::{JoinToken as TokenInfo, Machine};
use slate_proto::trust::MachineFacts;

/// etcd key prefixes.
pub const TOKENS: &str = "/slate/join/tokens/";
pub const MACHINES: &str = "/slate/join/machines/";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    /// SHA-256 of the secret, hex: the secret itself is never kept.
    pub secret_sha256: String,
    pub role: String,
    pub created_unix: u64,
    /// 0: never.
    pub expires_unix: u64,
    pub auto_accept: bool,
    #[serde(default)]
    pub config_patch: String,
}

impl TokenRecord {
    pub fn expired(&self, now: u64) -> bool {
        self.expires_unix != 0 && now >= self.expires_unix
    }

    pub fn info(&self) -> TokenInfo {
        TokenInfo {
            id: self.id.clone(),
            role: self.role.clone(),
            created_unix: self.created_unix,
            expires_unix: self.expires_unix,
            auto_accept: self.auto_accept,
            config_patch: self.config_patch.clone(),
        }
    }
}

/// A machine's state in its life as a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MachineState {
    /// Registered; waits for `machine accept`.
    Pending,
    /// Accepted; gets its config at its next call.
    Accepted,
    /// Has been handed its config.
    Joined,
    /// Refused by an admin; told so at every call.
    Rejected,
}

impl MachineState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Accepted => "accepted",
            Self::Joined => "joined",
            Self::Rejected => "rejected",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    pub uuid: String,
    pub hostname: String,
    pub macs: Vec<String>,
    pub addresses: Vec<String>,
    pub disks: Vec<String>,
    pub cpus: u32,
    pub memory_bytes: u64,
}

impl From<MachineFacts> for Facts {
    fn from(f: MachineFacts) -> Self {
        // Bounded and printable: a registration is kept in etcd and shown
        // on people's terminals, where an escape sequence would act.
        let clean = |s: &str, max: usize| -> String {
            s.chars().filter(|c| !c.is_control()).take(max).collect()
        };
        let short =
            |v: Vec<String>| -> Vec<String> { v.iter().take(32).map(|s| clean(s, 128)).collect() };
        Self {
            uuid: clean(&f.uuid, 64),
            hostname: clean(&f.hostname, 253),
            macs: short(f.macs),
            addresses: short(f.addresses),
            disks: short(f.disks),
            cpus: f.cpus,
            memory_bytes: f.memory_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_are_kept_bounded_and_without_control_characters() {
        let facts = Facts::from(MachineFacts {
            hostname: "evil\u{1b}[2Jhost".into(),
            macs: vec!["m".repeat(500); 100],
            ..Default::default()
        });
        assert_eq!(facts.hostname, "evil[2Jhost");
        assert_eq!(facts.macs.len(), 32);
        assert!(facts.macs.iter().all(|m| m.len() == 128));
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineRecord {
    pub id: String,
    pub state: MachineState,
    /// The role it joins as: the token's until an accept names another.
    pub role: String,
    pub token_id: String,
    /// The Ed25519 public key that registered it, hex.
    pub node_key: String,
    /// The newest `sent_at_ms` seen: an older or equal one is a replay.
    pub last_sent_at_ms: u64,
    pub facts: Facts,
    pub first_seen_unix: u64,
    pub last_seen_unix: u64,
    pub source: String,
    /// The token's patch, then the accept's (YAML, possibly empty).
    #[serde(default)]
    pub patches: Vec<String>,
    /// SHA-256 of the machine token handed to this worker, hex; empty for
    /// none (a control-plane node, or not joined yet).
    #[serde(default)]
    pub node_token_sha256: String,
    /// That token itself: kubelet on the worker joins Kubernetes with it
    /// (it is the worker's `machine.token`), so the control plane applies
    /// it as a bootstrap-token Secret, which holds it in etcd in the clear
    /// just the same.
    #[serde(default)]
    pub kubelet_token: String,
}

impl MachineRecord {
    pub fn info(&self) -> Machine {
        Machine {
            id: self.id.clone(),
            state: self.state.as_str().to_owned(),
            role: self.role.clone(),
            token_id: self.token_id.clone(),
            key_fingerprint: self.node_key.chars().take(16).collect(),
            uuid: self.facts.uuid.clone(),
            hostname: self.facts.hostname.clone(),
            macs: self.facts.macs.clone(),
            addresses: self.facts.addresses.clone(),
            disks: self.facts.disks.clone(),
            cpus: self.facts.cpus,
            memory_bytes: self.facts.memory_bytes,
            first_seen_unix: self.first_seen_unix,
            last_seen_unix: self.last_seen_unix,
            source: self.source.clone(),
        }
    }
}

/// Seconds since the epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
