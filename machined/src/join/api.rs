//! `slate.join.v1.JoinService` on machined's socket: what `slatectl
//! gen join-token`, `join-tokens`, `machines` and `machine accept|reject|
//! forget` reach through apid, which has checked the caller's role.

use std::sync::Arc;

use slate_config::MachineConfig;
use slate_proto::join::join_service_server::JoinService;
use slate_proto::join::{
    AcceptMachineRequest, AcceptMachineResponse, CreateTokenRequest, CreateTokenResponse,
    ForgetMachineRequest, ForgetMachineResponse, ListMachinesRequest, ListMachinesResponse,
    ListTokensRequest, ListTokensResponse, RejectMachineRequest, RejectMachineResponse,
    RevokeTokenRequest, RevokeTokenResponse,
};
use tonic::{Request, Response, Status};

use super::Registry;
use crate::node::Node;

pub struct JoinApi {
    node: Arc<Node>,
    registry: Option<Arc<Registry>>,
}

impl JoinApi {
    pub fn new(node: Arc<Node>, registry: Option<Arc<Registry>>) -> Self {
        Self { node, registry }
    }

    fn registry(&self) -> Result<&Registry, Status> {
        self.registry.as_deref().ok_or_else(|| {
            Status::failed_precondition(
                "join tokens and registered machines are kept in the cluster's etcd: \
                 ask a control-plane node that runs etcd",
            )
        })
    }

    /// The running config, which must hold the cluster's secrets.
    async fn signer(&self) -> Result<MachineConfig, Status> {
        let (_, _) = crate::trust::machine_authority(&self.node).await?;
        match self.node.configs().await.0 {
            Some((config, _)) => Ok(config),
            None => Err(Status::failed_precondition("the node has no config")),
        }
    }
}

#[tonic::async_trait]
impl JoinService for JoinApi {
    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        let registry = self.registry()?;
        let config = self.signer().await?;
        Ok(Response::new(
            registry.create_token(&config, request.into_inner()).await?,
        ))
    }

    async fn list_tokens(
        &self,
        _request: Request<ListTokensRequest>,
    ) -> Result<Response<ListTokensResponse>, Status> {
        let tokens = self.registry()?.list_tokens().await?;
        Ok(Response::new(ListTokensResponse { tokens }))
    }

    async fn revoke_token(
        &self,
        request: Request<RevokeTokenRequest>,
    ) -> Result<Response<RevokeTokenResponse>, Status> {
        self.registry()?
            .revoke_token(&request.into_inner().id)
            .await?;
        Ok(Response::new(RevokeTokenResponse {}))
    }

    async fn list_machines(
        &self,
        _request: Request<ListMachinesRequest>,
    ) -> Result<Response<ListMachinesResponse>, Status> {
        let machines = self.registry()?.list_machines().await?;
        Ok(Response::new(ListMachinesResponse { machines }))
    }

    async fn accept_machine(
        &self,
        request: Request<AcceptMachineRequest>,
    ) -> Result<Response<AcceptMachineResponse>, Status> {
        let registry = self.registry()?;
        let config = self.signer().await?;
        let r = request.into_inner();
        let machine = registry
            .accept(&config, &r.id, &r.role, &r.config_patch)
            .await?;
        Ok(Response::new(AcceptMachineResponse {
            machine: Some(machine),
        }))
    }

    async fn reject_machine(
        &self,
        request: Request<RejectMachineRequest>,
    ) -> Result<Response<RejectMachineResponse>, Status> {
        self.registry()?.reject(&request.into_inner().id).await?;
        Ok(Response::new(RejectMachineResponse {}))
    }

    async fn forget_machine(
        &self,
        request: Request<ForgetMachineRequest>,
    ) -> Result<Response<ForgetMachineResponse>, Status> {
        self.registry()?.forget(&request.into_inner().id).await?;
        Ok(Response::new(ForgetMachineResponse {}))
    }
}
