//! etcd's certificates, issued from the cluster's etcd CA before each
//! start: one member certificate (server of both ports, client to peers)
//! for this node's name and address, and the CA that peers and clients
//! must be signed by.

use std::path::Path;

use slate_config::MachineConfig;
use slate_pki::Authority;

use super::Identity;

pub const CA_CRT: &str = "ca.crt";
pub const MEMBER_CRT: &str = "member.crt";
pub const MEMBER_KEY: &str = "member.key";

fn ca(config: &MachineConfig) -> Result<&slate_config::PemKeyPair, String> {
    config
        .cluster
        .etcd
        .ca
        .as_ref()
        .ok_or_else(|| "cluster.etcd.ca is missing (slatectl gen config makes one)".into())
}

/// The etcd CA's certificate, PEM (its key is not read).
pub fn etcd_ca(config: &MachineConfig) -> Result<String, String> {
    ca(config)?
        .crt_pem()
        .map_err(|e| format!("cluster.etcd.ca.{e}"))
}

/// The etcd CA, able to issue.
pub fn authority(config: &MachineConfig) -> Result<Authority, String> {
    let key = ca(config)?
        .key_pem()
        .map_err(|e| format!("cluster.etcd.ca.{e}"))?
        .ok_or("cluster.etcd.ca.key is missing: a control-plane node issues etcd's certificates")?;
    Authority::from_pem(&etcd_ca(config)?, &key).map_err(|e| format!("cluster.etcd.ca: {e}"))
}

/// Writes the CA and a fresh member certificate for `who` into `dir`
/// (keys 0600). Valid for its address, its name and loopback, so that
/// machined and people on the node (and port forwards) reach it.
pub fn write(config: &MachineConfig, who: &Identity, dir: &Path) -> Result<(), String> {
    let authority = authority(config)?;
    let mut names = vec![
        who.ip.to_string(),
        who.name.clone(),
        "127.0.0.1".into(),
        "::1".into(),
        "localhost".into(),
    ];
    // Joining nodes dial the control-plane endpoint's host (a DNS name or
    // VIP in front of the control plane): every member answers to it.
    if let Some(host) = slate_config::endpoint_host(&config.cluster.control_plane.endpoint) {
        names.push(host);
    }
    let member = authority
        .issue_etcd_member(&who.name, &names)
        .map_err(|e| format!("issuing etcd's certificate: {e}"))?;
    let ca = etcd_ca(config)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let write = |name: &str, text: &str, mode: u32| {
        slate_common::fs::write_atomic(&dir.join(name), text.as_bytes(), mode)
            .map_err(|e| slate_common::error::chain(&e))
    };
    write(CA_CRT, &ca, 0o644)?;
    write(MEMBER_CRT, &member.cert_pem, 0o644)?;
    write(MEMBER_KEY, &member.key_pem, 0o600)
}
