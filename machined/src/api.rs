//! machined's side of the machine service, on its Unix socket: the calls
//! that change the node. apid authorizes each caller and forwards; this
//! socket is reachable only by root daemons (mode 0600), so it trusts them.

use std::sync::Arc;
use std::time::Duration;

use slate_proto::machine::machine_service_server::MachineService;
use slate_proto::machine::{
    ApplyConfigurationRequest, ApplyConfigurationResponse, ApplyMode,
    GenerateClientConfigurationRequest, GenerateClientConfigurationResponse,
    GetMachineConfigRequest, GetMachineConfigResponse, ProcessesRequest, ProcessesResponse,
    RebootRequest, RebootResponse, ShutdownRequest, ShutdownResponse, VersionRequest,
    VersionResponse,
};
use tonic::{Request, Response, Status};

use crate::node::Node;
use crate::power::Action;

pub struct MachinedApi {
    node: Arc<Node>,
}

impl MachinedApi {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

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
            .contains_key(slate_machinery::constants::UNAUTHENTICATED_HEADER);
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
        let render = |c: &slate_machinery::config::MachineConfig| -> Result<String, Status> {
            let text = if show_secrets {
                c.to_yaml().map_err(|e| Status::internal(e.to_string()))?
            } else {
                slate_machinery::yaml::to_string(&c.redacted())
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

    async fn generate_client_configuration(
        &self,
        _: Request<GenerateClientConfigurationRequest>,
    ) -> Result<Response<GenerateClientConfigurationResponse>, Status> {
        Err(Status::unimplemented("apid issues client certificates"))
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
}
