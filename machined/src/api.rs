//! machined's side of the machine service, on its Unix socket: the calls
//! that change the node. apid authorizes each caller and forwards; this
//! socket is reachable only by root and apid's group (mode 0660), so it
//! trusts them.

use std::sync::Arc;
use std::time::Duration;

use slate_proto::machine::machine_service_server::MachineService;
use slate_proto::machine::{
    ApplyConfigurationRequest, ApplyConfigurationResponse, ApplyMode, BootstrapRequest,
    BootstrapResponse, ContainersRequest, ContainersResponse, DmesgRequest, EtcdLeaveRequest,
    EtcdLeaveResponse, EtcdMembersRequest, EtcdMembersResponse, EtcdRemoveMemberRequest,
    EtcdRemoveMemberResponse, EtcdSnapshotChunk, EtcdSnapshotRequest,
    GenerateClientConfigurationRequest, GenerateClientConfigurationResponse,
    GetMachineConfigRequest, GetMachineConfigResponse, ImagesRequest, ImagesResponse,
    KubeconfigRequest, KubeconfigResponse, LogLine, LogsRequest, ProcessesRequest,
    ProcessesResponse, RebootRequest, RebootResponse, ServiceActionKind, ServiceActionRequest,
    ServiceActionResponse, ServiceEvent, ServiceInfo, ServiceListRequest, ServiceListResponse,
    ShutdownRequest, ShutdownResponse, StaticPodsRequest, StaticPodsResponse, VersionRequest,
    VersionResponse,
};
use slate_proto::machine::{
    BootSlotsRequest, BootSlotsResponse, ResetRequest, ResetResponse, RollbackRequest,
    RollbackResponse, UpgradeRequest, UpgradeResponse,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::etcd::{Etcd, rpc as etcd_rpc};
use crate::node::Node;
use crate::power::Action;
use crate::services::{self, Supervisor, SupervisorError};

pub struct MachinedApi {
    node: Arc<Node>,
    services: Supervisor,
    etcd: Option<Arc<Etcd>>,
    /// Each dmesg stream holds a /dev/kmsg descriptor while it lasts.
    kmsg_readers: Arc<tokio::sync::Semaphore>,
}

/// Open dmesg streams at most, over all clients: a client that opens
/// `dmesg -f` in a loop must not run machined out of descriptors.
pub const MAX_KMSG_READERS: usize = 16;

impl MachinedApi {
    pub fn new(node: Arc<Node>, services: Supervisor, etcd: Option<Arc<Etcd>>) -> Self {
        Self {
            node,
            services,
            etcd,
            kmsg_readers: Arc::new(tokio::sync::Semaphore::new(MAX_KMSG_READERS)),
        }
    }
}

fn not_found(e: SupervisorError) -> Status {
    Status::not_found(e.to_string())
}

/// A service's status as the API shows it.
pub fn service_info(s: &services::Status) -> ServiceInfo {
    let health = match (s.has_health_check, s.healthy) {
        (false, _) => "",
        (true, None) => "unknown",
        (true, Some(true)) => "healthy",
        (true, Some(false)) => "unhealthy",
    };
    ServiceInfo {
        id: s.id.clone(),
        state: s.state.as_str().to_owned(),
        health: health.to_owned(),
        pid: s.pid.unwrap_or(0),
        restarts: s.restarts,
        events: s
            .events
            .iter()
            .map(|e| ServiceEvent {
                time_unix_ms: e
                    .at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
                state: e.state.as_str().to_owned(),
                message: e.message.clone(),
            })
            .collect(),
    }
}

/// Lines buffered per stream before a slow client holds the sender back.
const STREAM_BUFFER: usize = 256;

#[tonic::async_trait]
impl MachineService for MachinedApi {
    async fn version(
        &self,
        _: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        Err(Status::unimplemented("apid answers version"))
    }

    async fn processes(
        &self,
        _: Request<ProcessesRequest>,
    ) -> Result<Response<ProcessesResponse>, Status> {
        Err(Status::unimplemented("apid answers processes"))
    }

    async fn apply_configuration(
        &self,
        request: Request<ApplyConfigurationRequest>,
    ) -> Result<Response<ApplyConfigurationResponse>, Status> {
        let anonymous = request
            .metadata()
            .contains_key(slate_common::constants::UNAUTHENTICATED_HEADER);
        let r = request.into_inner();
        let mode = ApplyMode::try_from(r.mode)
            .map_err(|_| Status::invalid_argument(format!("unknown apply mode {}", r.mode)))?;
        let timeout =
            (r.try_timeout_seconds > 0).then(|| Duration::from_secs(r.try_timeout_seconds.into()));
        let response = self
            .node
            .apply(&r.data, mode, r.dry_run, timeout, anonymous)
            .await?;
        tracing::info!("apply-config: {}", response.summary);
        Ok(Response::new(response))
    }

    async fn get_machine_config(
        &self,
        request: Request<GetMachineConfigRequest>,
    ) -> Result<Response<GetMachineConfigResponse>, Status> {
        let show_secrets = request.into_inner().show_secrets;
        let (running, staged) = self.node.configs().await;
        let Some((config, source)) = running else {
            return Err(Status::failed_precondition(
                "the node has no config (maintenance mode)",
            ));
        };
        let render = |c: &slate_config::MachineConfig| -> Result<String, Status> {
            let text = if show_secrets {
                c.to_yaml().map_err(|e| Status::internal(e.to_string()))?
            } else {
                slate_config::yaml::to_string(&c.redacted())
                    .map_err(|e| Status::internal(e.to_string()))?
            };
            Ok(text)
        };
        let staged_yaml = match &staged {
            Some(s) => render(s)?,
            None => String::new(),
        };
        Ok(Response::new(GetMachineConfigResponse {
            yaml: render(&config)?,
            source: source.as_str().to_owned(),
            staged_yaml,
        }))
    }

    /// apid checked the caller is an admin; the CA key is read only here.
    async fn generate_client_configuration(
        &self,
        request: Request<GenerateClientConfigurationRequest>,
    ) -> Result<Response<GenerateClientConfigurationResponse>, Status> {
        let r = request.into_inner();
        let role: slate_pki::Role = r
            .role
            .parse()
            .map_err(|e: slate_pki::PkiError| Status::invalid_argument(e.to_string()))?;
        let name = if r.name.is_empty() {
            role.as_str().to_owned()
        } else {
            r.name
        };
        let (ca_pem, authority) = crate::trust::machine_authority(&self.node).await?;
        let id = authority
            .issue_client(&name, role)
            .map_err(|e| Status::internal(format!("issuing the certificate: {e}")))?;
        tracing::info!("issued a client certificate for {name:?} with role {role}");
        Ok(Response::new(GenerateClientConfigurationResponse {
            ca_pem,
            crt_pem: id.cert_pem,
            key_pem: id.key_pem,
        }))
    }

    async fn reboot(&self, _: Request<RebootRequest>) -> Result<Response<RebootResponse>, Status> {
        self.node.power().request(Action::Reboot);
        Ok(Response::new(RebootResponse {}))
    }

    async fn shutdown(
        &self,
        _: Request<ShutdownRequest>,
    ) -> Result<Response<ShutdownResponse>, Status> {
        self.node.power().request(Action::PowerOff);
        Ok(Response::new(ShutdownResponse {}))
    }

    async fn service_list(
        &self,
        request: Request<ServiceListRequest>,
    ) -> Result<Response<ServiceListResponse>, Status> {
        let id = request.into_inner().id;
        let statuses = if id.is_empty() {
            self.services.list()
        } else {
            vec![self.services.status(&id).map_err(not_found)?]
        };
        Ok(Response::new(ServiceListResponse {
            services: statuses.iter().map(service_info).collect(),
        }))
    }

    async fn service_action(
        &self,
        request: Request<ServiceActionRequest>,
    ) -> Result<Response<ServiceActionResponse>, Status> {
        let r = request.into_inner();
        let command = match ServiceActionKind::try_from(r.action) {
            Ok(ServiceActionKind::Start) => services::Command::Start,
            Ok(ServiceActionKind::Stop) => services::Command::Stop,
            Ok(ServiceActionKind::Restart) => services::Command::Restart,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "unknown service action {}",
                    r.action
                )));
            }
        };
        tracing::info!("service {}: {command:?} requested", r.id);
        self.services
            .command(&r.id, command)
            .await
            .map_err(not_found)?;
        Ok(Response::new(ServiceActionResponse {}))
    }

    type LogsStream = ReceiverStream<Result<LogLine, Status>>;

    async fn logs(
        &self,
        request: Request<LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let r = request.into_inner();
        let log = self.services.logs(&r.id).map_err(not_found)?;
        let (lines, mut follow) = log.tail_and_follow(r.tail.map(|n| n as usize));
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        tokio::spawn(async move {
            for line in lines {
                if tx.send(Ok(LogLine { line })).await.is_err() {
                    return;
                }
            }
            if !r.follow {
                return;
            }
            loop {
                let line = tokio::select! {
                    line = follow.recv() => line,
                    () = tx.closed() => return,
                };
                let line = match line {
                    Ok(line) => line,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        format!("… {n} lines skipped (the client was too slow)")
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(Ok(LogLine { line })).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type DmesgStream = ReceiverStream<Result<LogLine, Status>>;

    async fn dmesg(
        &self,
        request: Request<DmesgRequest>,
    ) -> Result<Response<Self::DmesgStream>, Status> {
        let r = request.into_inner();
        let permit = Arc::clone(&self.kmsg_readers)
            .try_acquire_owned()
            .map_err(|_| {
                Status::resource_exhausted(format!(
                    "{MAX_KMSG_READERS} dmesg streams are open already; close one"
                ))
            })?;
        let (lines_tx, mut lines_rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        tokio::spawn(async move {
            // Held until the stream ends and its descriptor is closed.
            let _permit = permit;
            let reader = crate::kmsg::stream(
                std::path::Path::new("/dev/kmsg"),
                r.follow,
                r.tail.map(|n| n as usize),
                lines_tx,
            );
            // Owns the receiver: when the client goes, dropping it ends the
            // reader too (its sends fail, its wait sees the channel closed).
            let out = tx.clone();
            let forward = async move {
                let tx = out;
                loop {
                    // A client that goes while the kernel is quiet ends
                    // the stream now, not at the next kernel message.
                    let line = tokio::select! {
                        line = lines_rx.recv() => line,
                        () = tx.closed() => return,
                    };
                    let Some(line) = line else { return };
                    if tx.send(Ok(LogLine { line })).await.is_err() {
                        return;
                    }
                }
            };
            let (result, ()) = tokio::join!(reader, forward);
            if let Err(e) = result {
                let _ = tx
                    .send(Err(Status::unavailable(format!("reading /dev/kmsg: {e}"))))
                    .await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn bootstrap(
        &self,
        _: Request<BootstrapRequest>,
    ) -> Result<Response<BootstrapResponse>, Status> {
        let etcd = etcd_rpc::require(self.etcd.as_ref())?;
        let message = etcd_rpc::bootstrap(etcd).await?;
        Ok(Response::new(BootstrapResponse { message }))
    }

    async fn etcd_members(
        &self,
        _: Request<EtcdMembersRequest>,
    ) -> Result<Response<EtcdMembersResponse>, Status> {
        let etcd = etcd_rpc::require(self.etcd.as_ref())?;
        Ok(Response::new(etcd_rpc::members(etcd).await?))
    }

    type EtcdSnapshotStream = ReceiverStream<Result<EtcdSnapshotChunk, Status>>;

    async fn etcd_snapshot(
        &self,
        _: Request<EtcdSnapshotRequest>,
    ) -> Result<Response<Self::EtcdSnapshotStream>, Status> {
        let etcd = etcd_rpc::require(self.etcd.as_ref())?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        etcd_rpc::snapshot(etcd, tx).await?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn etcd_leave(
        &self,
        _: Request<EtcdLeaveRequest>,
    ) -> Result<Response<EtcdLeaveResponse>, Status> {
        let etcd = etcd_rpc::require(self.etcd.as_ref())?;
        etcd_rpc::leave(etcd, &self.services).await?;
        Ok(Response::new(EtcdLeaveResponse {}))
    }

    async fn etcd_remove_member(
        &self,
        request: Request<EtcdRemoveMemberRequest>,
    ) -> Result<Response<EtcdRemoveMemberResponse>, Status> {
        let etcd = etcd_rpc::require(self.etcd.as_ref())?;
        etcd_rpc::remove_member(etcd, &request.into_inner().member).await?;
        Ok(Response::new(EtcdRemoveMemberResponse {}))
    }

    async fn containers(
        &self,
        request: Request<ContainersRequest>,
    ) -> Result<Response<ContainersResponse>, Status> {
        let socket = std::path::Path::new(services::layer::CONTAINERD_SOCKET);
        let containers = crate::containers::list(socket, &request.into_inner().namespace)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(ContainersResponse { containers }))
    }

    async fn kubeconfig(
        &self,
        _: Request<KubeconfigRequest>,
    ) -> Result<Response<KubeconfigResponse>, Status> {
        let Some((config, _)) = self.node.configs().await.0 else {
            return Err(Status::failed_precondition(
                "the node has no config (maintenance mode)",
            ));
        };
        let kubeconfig =
            tokio::task::spawn_blocking(move || crate::kubernetes::admin_kubeconfig(&config))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(Status::failed_precondition)?;
        tracing::info!("issued an admin kubeconfig");
        Ok(Response::new(KubeconfigResponse {
            kubeconfig: kubeconfig.into_bytes(),
        }))
    }

    async fn static_pods(
        &self,
        _: Request<StaticPodsRequest>,
    ) -> Result<Response<StaticPodsResponse>, Status> {
        let dir = slate_k8s::layout::Layout::default().manifests;
        let pods = tokio::task::spawn_blocking(move || crate::kubernetes::static_pods(&dir))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(StaticPodsResponse { pods }))
    }

    async fn images(
        &self,
        request: Request<ImagesRequest>,
    ) -> Result<Response<ImagesResponse>, Status> {
        let socket = std::path::Path::new(services::layer::CONTAINERD_SOCKET);
        let images = crate::images::list(socket, &request.into_inner().namespace)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(ImagesResponse { images }))
    }

    async fn upgrade(
        &self,
        request: Request<tonic::Streaming<UpgradeRequest>>,
    ) -> Result<Response<UpgradeResponse>, Status> {
        crate::install::rpc::upgrade(request.into_inner(), self.etcd.as_ref(), self.node.power())
            .await
            .map(Response::new)
    }

    async fn rollback(
        &self,
        _: Request<RollbackRequest>,
    ) -> Result<Response<RollbackResponse>, Status> {
        crate::install::rpc::rollback(self.node.power())
            .await
            .map(Response::new)
    }

    async fn boot_slots(
        &self,
        _: Request<BootSlotsRequest>,
    ) -> Result<Response<BootSlotsResponse>, Status> {
        crate::install::rpc::boot_slots().await.map(Response::new)
    }

    async fn reset(
        &self,
        request: Request<ResetRequest>,
    ) -> Result<Response<ResetResponse>, Status> {
        crate::install::rpc::reset(
            request.into_inner(),
            self.etcd.as_ref(),
            &self.services,
            self.node.power(),
        )
        .await
        .map(Response::new)
    }
}
