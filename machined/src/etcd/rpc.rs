//! The etcd calls of the machine API, as machined answers them.

use std::sync::Arc;

use slate_proto::machine::{EtcdMember, EtcdMembersResponse, EtcdSnapshotChunk};
use tonic::Status;

use super::{BootstrapRefused, Etcd, EtcdError, Member};
use crate::services::{Command, State, Supervisor};

/// The node's etcd, or why it has none.
pub fn require(etcd: Option<&Arc<Etcd>>) -> Result<&Arc<Etcd>, Status> {
    etcd.ok_or_else(|| {
        Status::failed_precondition(
            "this node runs no etcd: it is not a control-plane node, or its image has no etcd extension",
        )
    })
}

fn unavailable(e: EtcdError) -> Status {
    Status::unavailable(e.to_string())
}

pub async fn bootstrap(etcd: &Etcd) -> Result<String, Status> {
    etcd.bootstrap().await.map_err(|e| match e {
        BootstrapRefused::NotReady(_) => Status::failed_precondition(e.to_string()),
        _ => Status::already_exists(e.to_string()),
    })
}

/// The members as this node's etcd sees them, else as any member does.
pub async fn members(etcd: &Etcd) -> Result<EtcdMembersResponse, Status> {
    let mut client = match etcd.connect_local().await {
        Ok(c) => c,
        Err(_) => etcd.connect_cluster().await.map_err(unavailable)?,
    };
    let members = client.members().await.map_err(unavailable)?;
    let leader = client.leader().await.unwrap_or(0);
    Ok(EtcdMembersResponse {
        members: members.into_iter().map(to_proto).collect(),
        leader,
    })
}

fn to_proto(m: Member) -> EtcdMember {
    EtcdMember {
        id: m.id,
        name: m.name,
        peer_urls: m.peer_urls,
        client_urls: m.client_urls,
        learner: m.learner,
    }
}

/// Streams a snapshot of the local member's database into `tx`.
pub async fn snapshot(
    etcd: &Etcd,
    tx: tokio::sync::mpsc::Sender<Result<EtcdSnapshotChunk, Status>>,
) -> Result<(), Status> {
    let mut client = etcd.connect_local().await.map_err(unavailable)?;
    let mut stream = client.snapshot().await.map_err(unavailable)?;
    tokio::spawn(async move {
        loop {
            match stream.message().await {
                Ok(Some(chunk)) => {
                    let data = chunk.blob().to_vec();
                    if tx.send(Ok(EtcdSnapshotChunk { data })).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    let _ = tx
                        .send(Err(Status::unavailable(format!("etcd snapshot: {e}"))))
                        .await;
                    return;
                }
            }
        }
    });
    Ok(())
}

/// Removes this node's member, then stops its etcd and deletes its data.
/// The last voting member may not leave: that would end the cluster. A
/// node the cluster no longer lists (removed while it was down) only
/// stops and forgets, so it can join again.
pub async fn leave(etcd: &Etcd, services: &Supervisor) -> Result<(), Status> {
    let who = etcd.identity().map_err(Status::failed_precondition)?;
    let mut client = etcd.connect_cluster().await.map_err(unavailable)?;
    let members = client.members().await.map_err(unavailable)?;
    let peer_url = who.peer_url();
    match members.iter().find(|m| m.peer_urls.contains(&peer_url)) {
        Some(me) => {
            let voters = members.iter().filter(|m| !m.learner).count();
            if !me.learner && voters <= 1 {
                return Err(Status::failed_precondition(
                    "this node is the cluster's last voting member: leaving would end the cluster",
                ));
            }
            client.remove(me.id).await.map_err(unavailable)?;
            tracing::info!(
                "etcd: member {:x} ({}) removed; stopping etcd",
                me.id,
                who.name
            );
        }
        None => {
            tracing::info!("etcd: not a member any more; stopping etcd and forgetting its data")
        }
    }
    stop(services).await?;
    etcd.forget()
        .map_err(|e| Status::internal(format!("deleting etcd's data: {e}")))
}

/// Stops the etcd service and waits until its process is gone: its data
/// must not be deleted under it.
async fn stop(services: &Supervisor) -> Result<(), Status> {
    let mut changes = services.subscribe();
    services
        .command("etcd", Command::Stop)
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
    let stopped = async {
        loop {
            let done = services
                .status("etcd")
                .map_or(true, |s| s.state == State::Stopped && s.pid.is_none());
            if done {
                return;
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    };
    tokio::time::timeout(STOP_WAIT, stopped).await.map_err(|_| {
        Status::deadline_exceeded(format!(
            "etcd did not stop within {STOP_WAIT:?}; its data is kept"
        ))
    })
}

/// etcd's grace plus the supervisor's kill.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Removes another member, named by its name or hex id.
pub async fn remove_member(etcd: &Etcd, which: &str) -> Result<(), Status> {
    let mut client = etcd.connect_cluster().await.map_err(unavailable)?;
    let members = client.members().await.map_err(unavailable)?;
    let id = u64::from_str_radix(which.trim_start_matches("0x"), 16).ok();
    let target = members
        .iter()
        .find(|m| m.name == which || Some(m.id) == id)
        .ok_or_else(|| {
            let names: Vec<String> = members
                .iter()
                .map(|m| format!("{} ({:x})", m.name, m.id))
                .collect();
            Status::not_found(format!(
                "no etcd member {which:?} (members: {})",
                names.join(", ")
            ))
        })?;
    if let Ok(who) = etcd.identity()
        && target.peer_urls.contains(&who.peer_url())
    {
        return Err(Status::invalid_argument(
            "that is this node: use `slatectl etcd leave` on it",
        ));
    }
    client.remove(target.id).await.map_err(unavailable)
}
