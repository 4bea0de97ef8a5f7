//! `slate.machine.v1.MachineService`: each RPC authorizes, then calls a
//! plain function.

use std::path::Path;

use slate_machinery::pki::Role;
use slate_machinery::version;
use slate_proto::machine::machine_service_server::MachineService;
use slate_proto::machine::{ProcessesRequest, ProcessesResponse, VersionRequest, VersionResponse};
use tonic::{Request, Response, Status};

use crate::auth::{Access, authorize};
use crate::sysinfo;

pub struct MachineApi {
    /// Why the node is in safe mode, if it is.
    safe_mode: Option<String>,
}

impl MachineApi {
    pub fn new(safe_mode: Option<String>) -> Self {
        Self { safe_mode }
    }

    pub fn safe_mode(&self) -> bool {
        self.safe_mode.is_some()
    }
}

#[tonic::async_trait]
impl MachineService for MachineApi {
    async fn version(
        &self,
        request: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        authorize(
            &request,
            Access::RoleOrSafeMode(Role::Reader),
            self.safe_mode.as_deref(),
        )?;
        Ok(Response::new(version_info(self.safe_mode.as_deref())))
    }

    async fn processes(
        &self,
        request: Request<ProcessesRequest>,
    ) -> Result<Response<ProcessesResponse>, Status> {
        authorize(
            &request,
            Access::Role(Role::Reader),
            self.safe_mode.as_deref(),
        )?;
        Ok(Response::new(ProcessesResponse {
            processes: sysinfo::processes(Path::new("/proc")),
        }))
    }
}

fn version_info(safe_mode: Option<&str>) -> VersionResponse {
    let (kernel, arch) = sysinfo::kernel_and_arch();
    VersionResponse {
        tag: version::TAG.to_owned(),
        commit: version::COMMIT.to_owned(),
        kernel,
        arch,
        hostname: sysinfo::hostname(),
        uptime_ms: sysinfo::uptime_ms(),
        boot_time_unix: sysinfo::boot_time_unix(Path::new("/proc")),
        safe_mode: safe_mode.is_some(),
        safe_mode_reason: safe_mode.unwrap_or_default().to_owned(),
    }
}
