//! machined's etcd client (the `etcd-client` crate over mutual TLS), with
//! the few calls membership needs.

use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, MemberAddOptions, TlsOptions};
use slate_pki::CertAndKey;

/// How long one endpoint gets to answer before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Each call's deadline; a snapshot stream is not bounded by it.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("{0}")]
    Config(String),
    /// `answered`: some endpoint accepted the connection but the call
    /// failed (TLS, a refusal): a cluster may well be there.
    #[error("no etcd member answers at {endpoints}: {last}")]
    Unreachable {
        endpoints: String,
        last: String,
        answered: bool,
    },
    #[error("etcd {what}: {source}")]
    Call {
        what: &'static str,
        #[source]
        source: etcd_client::Error,
    },
}

impl EtcdError {
    fn call(what: &'static str) -> impl FnOnce(etcd_client::Error) -> Self {
        move |source| Self::Call { what, source }
    }
}

/// Causes that mean no process listens there (as opposed to one that
/// answered and refused).
const NOBODY_THERE: &[&str] = &[
    "Connection refused",
    "No route to host",
    "Network is unreachable",
    "timed out",
    "dns error",
];

/// What went wrong, in a line: gRPC wraps a refused connection in three
/// layers of transport errors; people need the innermost cause.
fn brief(e: &etcd_client::Error) -> String {
    let etcd_client::Error::GRpcStatus(status) = e else {
        return e.to_string();
    };
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(status);
    let mut innermost = None;
    while let Some(c) = cause {
        innermost = Some(c.to_string());
        cause = c.source();
    }
    match innermost {
        Some(inner) if inner != status.message() => format!("{}: {inner}", status.message()),
        _ => status.message().to_owned(),
    }
}

/// The etcd CA and a client certificate it signed.
#[derive(Clone)]
pub struct ClientTls {
    pub ca_pem: String,
    pub identity: CertAndKey,
}

/// One member as etcd lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    /// Empty until the member has started once.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub learner: bool,
}

impl From<&etcd_client::Member> for Member {
    fn from(m: &etcd_client::Member) -> Self {
        Self {
            id: m.id(),
            name: m.name().to_owned(),
            peer_urls: m.peer_urls().to_vec(),
            client_urls: m.client_urls().to_vec(),
            learner: m.is_learner(),
        }
    }
}

fn members(list: &[etcd_client::Member]) -> Vec<Member> {
    list.iter().map(Member::from).collect()
}

/// A connection to one member that answered; clones share it.
#[derive(Clone)]
pub struct EtcdClient {
    inner: Client,
    /// The endpoint it is connected to.
    pub endpoint: String,
}

impl EtcdClient {
    /// Connects to the first of `endpoints` that answers a member list.
    /// One at a time, not balanced: a dead endpoint must cost a timeout
    /// once, not fail every other call.
    pub async fn connect(endpoints: &[String], tls: &ClientTls) -> Result<Self, EtcdError> {
        let mut last = String::from("no endpoint to try");
        let mut answered = false;
        for endpoint in endpoints {
            let options = ConnectOptions::new()
                .with_connect_timeout(CONNECT_TIMEOUT)
                .with_timeout(CALL_TIMEOUT)
                .with_tls(
                    TlsOptions::new()
                        .ca_certificate(Certificate::from_pem(&tls.ca_pem))
                        .identity(Identity::from_pem(
                            &tls.identity.cert_pem,
                            &tls.identity.key_pem,
                        )),
                );
            let attempt = async {
                let mut client = Client::connect([endpoint.as_str()], Some(options)).await?;
                client.member_list().await?;
                Ok::<_, etcd_client::Error>(client)
            };
            match tokio::time::timeout(CONNECT_TIMEOUT * 2, attempt).await {
                Ok(Ok(inner)) => {
                    return Ok(Self {
                        inner,
                        endpoint: endpoint.clone(),
                    });
                }
                Ok(Err(e)) => {
                    let why = brief(&e);
                    answered |= !NOBODY_THERE.iter().any(|n| why.contains(n));
                    last = format!("{endpoint}: {why}");
                }
                Err(_) => last = format!("{endpoint}: no answer in {:?}", CONNECT_TIMEOUT * 2),
            }
        }
        Err(EtcdError::Unreachable {
            endpoints: endpoints.join(", "),
            last,
            answered,
        })
    }

    pub async fn members(&mut self) -> Result<Vec<Member>, EtcdError> {
        let resp = self
            .inner
            .member_list()
            .await
            .map_err(EtcdError::call("member list"))?;
        Ok(members(resp.members()))
    }

    /// Adds a learner at `peer_url`; returns it and the new member list.
    pub async fn add_learner(&mut self, peer_url: &str) -> Result<(u64, Vec<Member>), EtcdError> {
        let resp = self
            .inner
            .member_add(
                [peer_url.to_owned()],
                Some(MemberAddOptions::new().with_is_learner()),
            )
            .await
            .map_err(EtcdError::call("member add"))?;
        let id = resp
            .member()
            .map(etcd_client::Member::id)
            .ok_or_else(|| EtcdError::Config("member add returned no member".into()))?;
        Ok((id, members(resp.member_list())))
    }

    pub async fn promote(&mut self, id: u64) -> Result<(), EtcdError> {
        self.inner
            .member_promote(id)
            .await
            .map_err(EtcdError::call("member promote"))?;
        Ok(())
    }

    pub async fn remove(&mut self, id: u64) -> Result<(), EtcdError> {
        self.inner
            .member_remove(id)
            .await
            .map_err(EtcdError::call("member remove"))?;
        Ok(())
    }

    /// The id of the member the connected one follows (0: none).
    pub async fn leader(&mut self) -> Result<u64, EtcdError> {
        let status = self
            .inner
            .status()
            .await
            .map_err(EtcdError::call("status"))?;
        Ok(status.leader())
    }

    /// The value of `key` and its modification revision (for
    /// [`Self::put_if`]).
    pub async fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, i64)>, EtcdError> {
        let resp = self
            .inner
            .get(key, None)
            .await
            .map_err(EtcdError::call("get"))?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| (kv.value().to_vec(), kv.mod_revision())))
    }

    /// Every key under `prefix`, with its value.
    pub async fn list(&mut self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, EtcdError> {
        let resp = self
            .inner
            .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
            .await
            .map_err(EtcdError::call("get"))?;
        Ok(resp
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    kv.value().to_vec(),
                )
            })
            .collect())
    }

    /// Writes `value` if `key` was last modified at `revision` (0: if it
    /// does not exist): two control-plane nodes updating one record at
    /// once cannot overwrite each other. Whether it was written.
    pub async fn put_if(
        &mut self,
        key: &str,
        value: Vec<u8>,
        revision: i64,
    ) -> Result<bool, EtcdError> {
        use etcd_client::{Compare, CompareOp, Txn, TxnOp};
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, revision)])
            .and_then([TxnOp::put(key, value, None)]);
        let resp = self.inner.txn(txn).await.map_err(EtcdError::call("txn"))?;
        Ok(resp.succeeded())
    }

    /// Deletes `key`; whether it existed.
    pub async fn delete(&mut self, key: &str) -> Result<bool, EtcdError> {
        let resp = self
            .inner
            .delete(key, None)
            .await
            .map_err(EtcdError::call("delete"))?;
        Ok(resp.deleted() > 0)
    }

    /// The database, as a stream of chunks.
    pub async fn snapshot(&mut self) -> Result<etcd_client::SnapshotStreaming, EtcdError> {
        self.inner
            .snapshot()
            .await
            .map_err(EtcdError::call("snapshot"))
    }
}
