//! `slate.machine.v1.MachineService`: the gate has authorized each call
//! ([`crate::gate`]); each RPC answers
//! itself (read-only facts of the node) or forwards to machined (calls
//! that change the node).

use std::path::Path;

use slate_common::version;
use slate_proto::machine::machine_service_client::MachineServiceClient;
use slate_proto::machine::machine_service_server::MachineService;
use slate_proto::machine::{
    ApplyConfigurationRequest, ApplyConfigurationResponse, BootstrapRequest, BootstrapResponse,
    ContainersRequest, ContainersResponse, DmesgRequest, EtcdLeaveRequest, EtcdLeaveResponse,
    EtcdMembersRequest, EtcdMembersResponse, EtcdRemoveMemberRequest, EtcdRemoveMemberResponse,
    EtcdSnapshotChunk, EtcdSnapshotRequest, GenerateClientConfigurationRequest,
    GenerateClientConfigurationResponse, GetMachineConfigRequest, GetMachineConfigResponse,
    ImagesRequest, ImagesResponse, KubeconfigRequest, KubeconfigResponse, LogLine, LogsRequest,
    ProcessesRequest, ProcessesResponse, RebootRequest, RebootResponse, ServiceActionRequest,
    ServiceActionResponse, ServiceListRequest, ServiceListResponse, ShutdownRequest,
    ShutdownResponse, StaticPodsRequest, StaticPodsResponse, VersionRequest, VersionResponse,
};
use slate_proto::machine::{
    BootSlotsRequest, BootSlotsResponse, ResetRequest, ResetResponse, RollbackRequest,
    RollbackResponse, UpgradeRequest, UpgradeResponse,
};
use tonic::codec::Streaming;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::auth::{Access, SHOW_SECRETS, authorize};
use crate::boot::Mode;
use crate::live::SharedMode;
use crate::sysinfo;

/// Checks callers against the current mode: one per service, sharing it.
#[derive(Clone)]
pub struct Authorizer {
    mode: SharedMode,
}

impl Authorizer {
    pub fn new(mode: SharedMode) -> Self {
        Self { mode }
    }

    /// Why the node is in maintenance mode, if it is.
    pub fn maintenance(&self) -> Option<String> {
        let mode = self.mode.read().unwrap_or_else(|e| e.into_inner());
        mode.maintenance().map(str::to_owned)
    }

    pub fn check<T>(&self, request: &Request<T>, access: Access) -> Result<(), Status> {
        let (maintenance, ca) = {
            let mode = self.mode.read().unwrap_or_else(|e| e.into_inner());
            let ca = match &*mode {
                Mode::Configured(view) => slate_pki::pem_to_der(&view.ca_pem).ok(),
                Mode::Maintenance(_) => None,
            };
            (mode.maintenance().map(str::to_owned), ca)
        };
        authorize(request, access, maintenance.as_deref(), ca.as_deref())
    }
}

pub struct MachineApi {
    auth: Authorizer,
    machined: MachineServiceClient<Channel>,
}

impl MachineApi {
    pub fn new(mode: SharedMode, machined: MachineServiceClient<Channel>) -> Self {
        Self {
            auth: Authorizer::new(mode),
            machined,
        }
    }

    fn maintenance(&self) -> Option<String> {
        self.auth.maintenance()
    }

    fn authorize<T>(&self, request: &Request<T>, access: Access) -> Result<(), Status> {
        self.auth.check(request, access)
    }

    fn machined(&self) -> MachineServiceClient<Channel> {
        // Cheap: a handle to one shared connection.
        self.machined.clone()
    }
}

/// Forwards a call to machined, keeping its status (a validation error
/// stays InvalidArgument with machined's message); an unreachable machined
/// is named as such.
/// Takes a fresh request: the caller's metadata is never passed on.
async fn forward<T, R, F, Fut>(
    client: MachineServiceClient<Channel>,
    request: Request<T>,
    call: F,
) -> Result<Response<R>, Status>
where
    F: FnOnce(MachineServiceClient<Channel>, Request<T>) -> Fut,
    Fut: std::future::Future<Output = Result<Response<R>, Status>>,
{
    call(client, request).await.map_err(machined_status)
}

/// machined's answer to a forwarded call, its status kept; a machined that
/// does not answer is named as such.
pub fn machined_status(s: Status) -> Status {
    // Only a transport failure carries a source; an Unavailable that
    // machined itself returned (etcd unreachable) is passed on as is.
    if s.code() == tonic::Code::Unavailable && std::error::Error::source(&s).is_some() {
        Status::unavailable(format!("machined is not answering: {}", s.message()))
    } else {
        s
    }
}

#[tonic::async_trait]
impl MachineService for MachineApi {
    async fn version(
        &self,
        _request: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(version_info(self.maintenance())))
    }

    async fn processes(
        &self,
        _request: Request<ProcessesRequest>,
    ) -> Result<Response<ProcessesResponse>, Status> {
        Ok(Response::new(ProcessesResponse {
            processes: sysinfo::processes(Path::new("/proc")),
        }))
    }

    async fn apply_configuration(
        &self,
        request: Request<ApplyConfigurationRequest>,
    ) -> Result<Response<ApplyConfigurationResponse>, Status> {
        let anonymous = self.maintenance().is_some();
        let mut forwarded = Request::new(request.into_inner());
        if anonymous {
            forwarded.metadata_mut().insert(
                slate_common::constants::UNAUTHENTICATED_HEADER,
                tonic::metadata::MetadataValue::from_static("1"),
            );
        }
        forward(self.machined(), forwarded, |mut c, r| async move {
            c.apply_configuration(r).await
        })
        .await
    }

    async fn get_machine_config(
        &self,
        request: Request<GetMachineConfigRequest>,
    ) -> Result<Response<GetMachineConfigResponse>, Status> {
        // The gate let any reader through; secrets need more.
        if request.get_ref().show_secrets {
            self.authorize(&request, SHOW_SECRETS)?;
        }
        forward(
            self.machined(),
            Request::new(request.into_inner()),
            |mut c, r| async move { c.get_machine_config(r).await },
        )
        .await
    }

    /// machined signs: apid holds no CA key.
    async fn generate_client_configuration(
        &self,
        request: Request<GenerateClientConfigurationRequest>,
    ) -> Result<Response<GenerateClientConfigurationResponse>, Status> {
        forward(
            self.machined(),
            Request::new(request.into_inner()),
            |mut c, r| async move { c.generate_client_configuration(r).await },
        )
        .await
    }

    async fn reboot(
        &self,
        request: Request<RebootRequest>,
    ) -> Result<Response<RebootResponse>, Status> {
        forward(
            self.machined(),
            Request::new(request.into_inner()),
            |mut c, r| async move { c.reboot(r).await },
        )
        .await
    }

    async fn shutdown(
        &self,
        request: Request<ShutdownRequest>,
    ) -> Result<Response<ShutdownResponse>, Status> {
        forward(
            self.machined(),
            Request::new(request.into_inner()),
            |mut c, r| async move { c.shutdown(r).await },
        )
        .await
    }

    async fn service_list(
        &self,
        request: Request<ServiceListRequest>,
    ) -> Result<Response<ServiceListResponse>, Status> {
        forward(
            self.machined(),
            Request::new(request.into_inner()),
            |mut c, r| async move { c.service_list(r).await },
        )
        .await
    }

    async fn service_action(
        &self,
        request: Request<ServiceActionRequest>,
    ) -> Result<Response<ServiceActionResponse>, Status> {
        forward(
            self.machined(),
            Request::new(request.into_inner()),
            |mut c, r| async move { c.service_action(r).await },
        )
        .await
    }

    // machined's stream is passed through as it is: each line as it comes,
    // and the client going away ends machined's side too.
    type LogsStream = Streaming<LogLine>;

    async fn logs(
        &self,
        request: Request<LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        forward(
            self.machined(),
            Request::new(request.into_inner()),
            |mut c, r| async move { c.logs(r).await },
        )
        .await
    }

    type DmesgStream = Streaming<LogLine>;

    async fn dmesg(
        &self,
        request: Request<DmesgRequest>,
    ) -> Result<Response<Self::DmesgStream>, Status> {
        forward(
            self.machined(),
            Request::new(request.into_inner()),
            |mut c, r| async move { c.dmesg(r).await },
        )
        .await
    }

    async fn bootstrap(
        &self,
        request: Request<BootstrapRequest>,
    ) -> Result<Response<BootstrapResponse>, Status> {
        forward(
            self.machined(),
            Request::new(request.into_inner()),
            |mut c, r| async move { c.bootstrap(r).await },
        )
        .await
    }

    async fn etcd_members(
        &self,
        request: Request<EtcdMembersRequest>,
    ) -> Result<Response<EtcdMembersResponse>, Status> {
        forward(
            self.machined(),
            Request::new(request.into_inner()),
            |mut c, r| async move { c.etcd_members(r).await },
        )
        .await
    }

    // The database holds every Kubernetes secret: admins only.
    type EtcdSnapshotStream = Streaming<EtcdSnapshotChunk>;

    async fn etcd_snapshot(
        &self,
        request: Request<EtcdSnapshotRequest>,
    ) -> Result<Response<Self::EtcdSnapshotStream>, Status> {
        forward(
            self.machined(),
            Request::new(request.into_inner()),
            |mut c, r| async move { c.etcd_snapshot(r).await },
        )
        .await
    }

    async fn etcd_leave(
        &self,
        request: Request<EtcdLeaveRequest>,
    ) -> Result<Response<EtcdLeaveResponse>, Status> {
        forward(
            self.machined(),
            Request::new(request.into_inner()),
            |mut c, r| async move { c.etcd_leave(r).await },
        )
        .await
    }

    async fn etcd_remove_member(
        &self,
        request: Request<EtcdRemoveMemberRequest>,
    ) -> Result<Response<EtcdRemoveMemberResponse>, Status> {
        forward(
            self.machined(),
            Request::new(request.into_inner()),
            |mut c, r| async move { c.etcd_remove_member(r).await },
        )
        .await
    }

    async fn containers(
        &self,
        request: Request<ContainersRequest>,
    ) -> Result<Response<ContainersResponse>, Status> {
        forward(
            self.machined(),
            Request::new(request.into_inner()),
            |mut c, r| async move { c.containers(r).await },
        )
        .await
    }

    async fn kubeconfig(
        &self,
        request: Request<KubeconfigRequest>,
    ) -> Result<Response<KubeconfigResponse>, Status> {
        forward(
            self.machined(),
            Request::new(request.into_inner()),
            |mut c, r| async move { c.kubeconfig(r).await },
        )
        .await
    }

    async fn static_pods(
        &self,
        request: Request<StaticPodsRequest>,
    ) -> Result<Response<StaticPodsResponse>, Status> {
        forward(
            self.machined(),
            Request::new(request.into_inner()),
            |mut c, r| async move { c.static_pods(r).await },
        )
        .await
    }

    async fn images(
        &self,
        request: Request<ImagesRequest>,
    ) -> Result<Response<ImagesResponse>, Status> {
        forward(
            self.machined(),
            Request::new(request.into_inner()),
            |mut c, r| async move { c.images(r).await },
        )
        .await
    }

    // A client-streamed bundle: passed on chunk by chunk. A client error
    // ends the forwarded stream early, and machined refuses the truncated
    // bundle.
    async fn upgrade(
        &self,
        request: Request<Streaming<UpgradeRequest>>,
    ) -> Result<Response<UpgradeResponse>, Status> {
        use tokio_stream::StreamExt as _;
        let stream = request.into_inner().map_while(|chunk| chunk.ok());
        forward(
            self.machined(),
            Request::new(stream),
            |mut c, r| async move { c.upgrade(r).await },
        )
        .await
    }

    async fn rollback(
        &self,
        request: Request<RollbackRequest>,
    ) -> Result<Response<RollbackResponse>, Status> {
        forward(
            self.machined(),
            Request::new(request.into_inner()),
            |mut c, r| async move { c.rollback(r).await },
        )
        .await
    }

    async fn boot_slots(
        &self,
        request: Request<BootSlotsRequest>,
    ) -> Result<Response<BootSlotsResponse>, Status> {
        forward(
            self.machined(),
            Request::new(request.into_inner()),
            |mut c, r| async move { c.boot_slots(r).await },
        )
        .await
    }

    async fn reset(
        &self,
        request: Request<ResetRequest>,
    ) -> Result<Response<ResetResponse>, Status> {
        forward(
            self.machined(),
            Request::new(request.into_inner()),
            |mut c, r| async move { c.reset(r).await },
        )
        .await
    }
}

fn version_info(maintenance: Option<String>) -> VersionResponse {
    let (kernel, arch) = sysinfo::kernel_and_arch();
    VersionResponse {
        tag: version::running_release(),
        commit: version::COMMIT.to_owned(),
        kernel,
        arch,
        hostname: sysinfo::hostname(),
        uptime_ms: sysinfo::uptime_ms(),
        boot_time_unix: sysinfo::boot_time_unix(Path::new("/proc")),
        maintenance: maintenance.is_some(),
        maintenance_reason: maintenance.unwrap_or_default(),
    }
}
