//! `slatectl containers`: what containerd runs, read through its own gRPC
//! API on its socket (the `containerd-client` crate), as `ctr` does.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::namespaces_client::NamespacesClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    ListContainersRequest, ListNamespacesRequest, ListTasksRequest,
};
use containerd_client::tonic::Request;
use containerd_client::tonic::transport::Channel;
use slate_proto::machine::ContainerInfo;

/// containerd's answer must come quickly; a wedged containerd must not
/// hold the API call.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);

/// The labels kubelet's CRI puts on a pod's containers.
const POD_LABEL: &str = "io.kubernetes.pod.name";
const CONTAINER_LABEL: &str = "io.kubernetes.container.name";

#[derive(Debug, thiserror::Error)]
pub enum ContainersError {
    #[error("containerd is not answering on {socket}: {reason}")]
    Connect { socket: String, reason: String },
    #[error("containerd {what}: {status}")]
    Call {
        what: &'static str,
        status: containerd_client::tonic::Status,
    },
    #[error("{0:?} is not a containerd namespace name")]
    BadNamespace(String),
    #[error("containerd did not answer within {0:?}")]
    Timeout(Duration),
}

/// The containers of `namespace` (every namespace when empty).
pub async fn list(socket: &Path, namespace: &str) -> Result<Vec<ContainerInfo>, ContainersError> {
    tokio::time::timeout(TIMEOUT, list_now(socket, namespace))
        .await
        .map_err(|_| ContainersError::Timeout(TIMEOUT))?
}

async fn list_now(socket: &Path, namespace: &str) -> Result<Vec<ContainerInfo>, ContainersError> {
    let channel = connect(socket).await?;
    let namespaces = namespaces(&channel, namespace).await?;
    let mut out = Vec::new();
    for ns in namespaces {
        out.extend(in_namespace(channel.clone(), &ns).await?);
    }
    out.sort_by(|a, b| (&a.namespace, &a.id).cmp(&(&b.namespace, &b.id)));
    Ok(out)
}

/// A channel to containerd's socket.
pub(crate) async fn connect(socket: &Path) -> Result<Channel, ContainersError> {
    containerd_client::connect(socket)
        .await
        .map_err(|e| ContainersError::Connect {
            socket: socket.display().to_string(),
            reason: slate_common::error::chain(&e),
        })
}

/// `namespace`, or every namespace containerd has when it is empty.
pub(crate) async fn namespaces(
    channel: &Channel,
    namespace: &str,
) -> Result<Vec<String>, ContainersError> {
    if !namespace.is_empty() {
        return Ok(vec![namespace.to_owned()]);
    }
    Ok(NamespacesClient::new(channel.clone())
        .list(ListNamespacesRequest::default())
        .await
        .map_err(|status| ContainersError::Call {
            what: "namespaces",
            status,
        })?
        .into_inner()
        .namespaces
        .into_iter()
        .map(|n| n.name)
        .collect())
}

/// A request in namespace `ns` (containerd reads it from this header).
/// Not `containerd_client::with_namespace!`, which panics on a name that
/// is not a header value.
pub(crate) fn in_ns<T>(message: T, ns: &str) -> Result<Request<T>, ContainersError> {
    let mut request = Request::new(message);
    let value = ns
        .parse()
        .map_err(|_| ContainersError::BadNamespace(ns.to_owned()))?;
    request.metadata_mut().insert("containerd-namespace", value);
    Ok(request)
}

async fn in_namespace(channel: Channel, ns: &str) -> Result<Vec<ContainerInfo>, ContainersError> {
    let containers = ContainersClient::new(channel.clone())
        .list(in_ns(ListContainersRequest::default(), ns)?)
        .await
        .map_err(|status| ContainersError::Call {
            what: "containers",
            status,
        })?
        .into_inner()
        .containers;
    let tasks: HashMap<String, (u32, i32)> = TasksClient::new(channel)
        .list(in_ns(ListTasksRequest::default(), ns)?)
        .await
        .map_err(|status| ContainersError::Call {
            what: "tasks",
            status,
        })?
        .into_inner()
        .tasks
        .into_iter()
        .map(|t| (t.container_id, (t.pid, t.status)))
        .collect();
    Ok(containers
        .into_iter()
        .map(|c| {
            let task = tasks.get(&c.id);
            ContainerInfo {
                namespace: ns.to_owned(),
                pod: c.labels.get(POD_LABEL).cloned().unwrap_or_default(),
                name: c.labels.get(CONTAINER_LABEL).cloned().unwrap_or_default(),
                image: c.image,
                pid: task.map_or(0, |t| t.0),
                status: task.map(|t| status_name(t.1)).unwrap_or_default(),
                id: c.id,
            }
        })
        .collect())
}

/// containerd's task status, as `ctr tasks ls` prints it.
fn status_name(status: i32) -> String {
    use containerd_client::types::v1::Status;
    match Status::try_from(status) {
        Ok(Status::Created) => "created",
        Ok(Status::Running) => "running",
        Ok(Status::Stopped) => "stopped",
        Ok(Status::Paused) => "paused",
        Ok(Status::Pausing) => "pausing",
        _ => "unknown",
    }
    .to_owned()
}
