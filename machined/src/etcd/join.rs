//! Deciding how etcd starts: from its data, as a new cluster after
//! `slatectl bootstrap`, or as a learner added to the running cluster;
//! and promoting that learner once it has caught up.

use std::time::Duration;

use crate::services::spec::Progress;

use super::{BootstrapRefused, Etcd, Identity, Member, certs};

/// Between attempts to find a cluster to join.
const JOIN_RETRY: Duration = Duration::from_secs(5);
/// Between attempts to promote a learner (etcd refuses until it is in
/// sync with the leader).
const PROMOTE_RETRY: Duration = Duration::from_secs(2);
/// How long "not in the member list" is taken for a member that lags.
const NOT_LISTED_PATIENCE: Duration = Duration::from_secs(60);

/// The pre-start step: certificates, then the flags that say which
/// cluster to start in. Waits (the service stays Preparing) until there
/// is one.
pub async fn prepare(
    etcd: &std::sync::Arc<Etcd>,
    progress: Progress,
) -> Result<Vec<String>, String> {
    let mut last_note = String::new();
    let mut note = |message: String| {
        if message != last_note {
            progress.note(message.clone());
            last_note = message;
        }
    };
    let mut bootstrap = etcd.bootstrap.subscribe();
    let mut certified: Option<Identity> = None;
    loop {
        // The address may come late (DHCP): wait for it like for a cluster.
        let who = match etcd.identity() {
            Ok(who) => who,
            Err(e) => {
                note(format!("waiting: {e}"));
                tokio::time::sleep(JOIN_RETRY).await;
                continue;
            }
        };
        // Certificates first: a failure here must not leave a learner
        // added for an etcd that cannot start.
        if certified.as_ref() != Some(&who) {
            // Keys, signatures and fsyncs: off the runtime, which also
            // answers apid's first certificate request at this moment.
            let (config, id, dir) = (etcd.config.clone(), who.clone(), etcd.paths.pki.clone());
            tokio::task::spawn_blocking(move || certs::write(&config, &id, &dir))
                .await
                .map_err(|e| format!("writing etcd's certificates: {e}"))??;
            certified = Some(who.clone());
        }
        let mut args = vec![
            format!("--name={}", who.name),
            format!("--advertise-client-urls={}", who.client_url()),
            format!("--initial-advertise-peer-urls={}", who.peer_url()),
        ];
        if etcd.has_data() {
            // etcd reads its membership from its data; a learner that was
            // not promoted before a restart is promoted now.
            spawn_promotion(etcd, who);
            return Ok(args);
        }
        etcd.clear_partial()
            .map_err(|e| format!("removing a failed start's data: {e}"))?;
        if etcd.bootstrap_requested() {
            tracing::info!("etcd: starting a new cluster as {}", who.name);
            args.push(format!("--initial-cluster={}={}", who.name, who.peer_url()));
            args.push("--initial-cluster-state=new".into());
            return Ok(args);
        }
        match join(etcd, &who).await {
            Ok(initial_cluster) => {
                args.push(format!("--initial-cluster={initial_cluster}"));
                args.push("--initial-cluster-state=existing".into());
                spawn_promotion(etcd, who);
                return Ok(args);
            }
            Err(e) => note(format!(
                "waiting for `slatectl bootstrap` on one control-plane node or for a cluster to join: {e}"
            )),
        }
        tokio::select! {
            _ = bootstrap.changed() => {}
            () = tokio::time::sleep(JOIN_RETRY) => {}
        }
    }
}

/// Has this node added as a learner (or finds it added by an earlier
/// attempt) and returns `--initial-cluster` for the members.
async fn join(etcd: &Etcd, who: &Identity) -> Result<String, String> {
    let candidates = etcd.candidates(Some(&who.client_url()));
    let mut client = etcd.connect(&candidates).await.map_err(|e| e.to_string())?;
    let listed = client.members().await.map_err(|e| e.to_string())?;
    let peer_url = who.peer_url();
    let mine = listed.iter().find(|m| m.peer_urls.contains(&peer_url));
    let (id, members) = match mine {
        // Added by an earlier attempt whose start failed: use it.
        Some(m) if m.name.is_empty() => (m.id, listed.clone()),
        // A member that ran here before, whose data is gone (the disk was
        // wiped): it can never start again; replace it.
        Some(m) => {
            tracing::warn!(
                "etcd: member {:x} ({}) has this node's address but no data here; replacing it",
                m.id,
                m.name
            );
            client.remove(m.id).await.map_err(|e| e.to_string())?;
            client
                .add_learner(&peer_url)
                .await
                .map_err(|e| e.to_string())?
        }
        None => client
            .add_learner(&peer_url)
            .await
            .map_err(|e| e.to_string())?,
    };
    tracing::info!(
        "etcd: added as learner {id:x} through {}; {} members",
        client.endpoint,
        members.len()
    );
    etcd.remember(&members);
    Ok(initial_cluster(&members, id, &who.name))
}

/// `name=peer-url,…` for every member, as `etcdctl member add` prints it:
/// the new member under `name`, others under theirs (empty while they
/// have not started).
pub fn initial_cluster(members: &[Member], new_id: u64, name: &str) -> String {
    members
        .iter()
        .flat_map(|m| {
            let n = if m.id == new_id { name } else { &m.name };
            m.peer_urls.iter().map(move |u| format!("{n}={u}"))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Promotes this node's member if it is a learner, retrying until etcd
/// agrees (it refuses while the learner lags); one task at a time.
fn spawn_promotion(etcd: &std::sync::Arc<Etcd>, who: Identity) {
    if !etcd.claim_promotion() {
        return;
    }
    let etcd = etcd.clone();
    tokio::spawn(async move {
        let peer_url = who.peer_url();
        // A member that answers may not have applied the add yet: "not a
        // member" is final only after a while.
        let patience = std::time::Instant::now() + NOT_LISTED_PATIENCE;
        loop {
            tokio::time::sleep(PROMOTE_RETRY).await;
            match promote_once(&etcd, &peer_url).await {
                Ok(Promotion::Promoted) => {
                    tracing::info!("etcd: {} is a voting member", who.name);
                    break;
                }
                Ok(Promotion::Voter) => break,
                Ok(Promotion::NotListed) if std::time::Instant::now() >= patience => break,
                Ok(Promotion::NotListed) => {}
                Err(e) => tracing::debug!("etcd: promotion not yet: {e}"),
            }
        }
        etcd.release_promotion();
    });
}

enum Promotion {
    Promoted,
    /// A voter already.
    Voter,
    /// The member list has no member at this node's address.
    NotListed,
}

async fn promote_once(etcd: &Etcd, peer_url: &str) -> Result<Promotion, String> {
    let mut client = etcd.connect_cluster().await.map_err(|e| e.to_string())?;
    let members = client.members().await.map_err(|e| e.to_string())?;
    etcd.remember(&members);
    let Some(me) = members
        .iter()
        .find(|m| m.peer_urls.iter().any(|u| u == peer_url))
    else {
        return Ok(Promotion::NotListed);
    };
    if !me.learner {
        return Ok(Promotion::Voter);
    }
    client.promote(me.id).await.map_err(|e| e.to_string())?;
    Ok(Promotion::Promoted)
}

/// Accepts `slatectl bootstrap` unless this node has etcd data, has
/// accepted one already, or a cluster answers elsewhere.
pub async fn bootstrap(etcd: &Etcd) -> Result<String, BootstrapRefused> {
    if etcd.has_data() {
        return Err(BootstrapRefused::HasData(
            etcd.paths.data.display().to_string(),
        ));
    }
    if etcd.bootstrap_requested() {
        return Err(BootstrapRefused::Requested);
    }
    let own = etcd.identity().ok().map(|w| w.client_url());
    let candidates = etcd.candidates(own.as_deref());
    if candidates.is_empty() {
        return Ok(accept(etcd));
    }
    let mut client = match etcd.connect(&candidates).await {
        Ok(client) => client,
        // Nothing listens at any candidate: no cluster to split.
        Err(super::EtcdError::Unreachable {
            answered: false, ..
        }) => return Ok(accept(etcd)),
        // Something answered but could not be used (TLS, a refusal): a
        // cluster may be there, and a second one would split it.
        Err(e) => {
            return Err(BootstrapRefused::NotReady(format!(
                "{e}; something answered there, so a cluster may exist: not starting a second one"
            )));
        }
    };
    let members = client.members().await.unwrap_or_default();
    Err(BootstrapRefused::ClusterExists {
        endpoint: client.endpoint.clone(),
        members: members
            .iter()
            .map(|m| {
                if m.name.is_empty() {
                    format!("{:x}", m.id)
                } else {
                    m.name.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(", "),
    })
}

fn accept(etcd: &Etcd) -> String {
    etcd.bootstrap.send_replace(true);
    "etcd is starting a new cluster with this node as its only member; \
     the other control-plane nodes join it by themselves"
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, name: &str, peer: &str) -> Member {
        Member {
            id,
            name: name.into(),
            peer_urls: vec![peer.into()],
            client_urls: Vec::new(),
            learner: false,
        }
    }

    #[test]
    fn initial_cluster_names_the_new_member() {
        let members = [
            member(1, "cp-1", "https://10.5.0.2:2380"),
            member(2, "", "https://10.5.0.3:2380"),
            member(3, "", "https://10.5.0.4:2380"),
        ];
        assert_eq!(
            initial_cluster(&members, 2, "cp-2"),
            "cp-1=https://10.5.0.2:2380,cp-2=https://10.5.0.3:2380,=https://10.5.0.4:2380"
        );
    }
}
