//! `slate.join.v1.JoinService`: join tokens and registered machines,
//! kept by machined in the cluster's etcd. The gate has checked the
//! caller's role ([`crate::auth::RULES`]); every call is forwarded to
//! machined with a fresh request (the caller's metadata stays here).

use slate_proto::join::join_service_client::JoinServiceClient;
use slate_proto::join::join_service_server::JoinService;
use slate_proto::join::{
    AcceptMachineRequest, AcceptMachineResponse, CreateTokenRequest, CreateTokenResponse,
    ForgetMachineRequest, ForgetMachineResponse, ListMachinesRequest, ListMachinesResponse,
    ListTokensRequest, ListTokensResponse, RejectMachineRequest, RejectMachineResponse,
    RevokeTokenRequest, RevokeTokenResponse,
};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::machine::machined_status;

pub struct JoinApi {
    machined: JoinServiceClient<Channel>,
}

impl JoinApi {
    pub fn new(machined: Channel) -> Self {
        Self {
            machined: JoinServiceClient::new(machined),
        }
    }
}

macro_rules! forward {
    ($($method:ident($req:ty) -> $resp:ty;)*) => {
        #[tonic::async_trait]
        impl JoinService for JoinApi {
            $(
                async fn $method(&self, request: Request<$req>) -> Result<Response<$resp>, Status> {
                    let mut machined = self.machined.clone();
                    machined
                        .$method(Request::new(request.into_inner()))
                        .await
                        .map_err(machined_status)
                }
            )*
        }
    };
}

forward! {
    create_token(CreateTokenRequest) -> CreateTokenResponse;
    list_tokens(ListTokensRequest) -> ListTokensResponse;
    revoke_token(RevokeTokenRequest) -> RevokeTokenResponse;
    list_machines(ListMachinesRequest) -> ListMachinesResponse;
    accept_machine(AcceptMachineRequest) -> AcceptMachineResponse;
    reject_machine(RejectMachineRequest) -> RejectMachineResponse;
    forget_machine(ForgetMachineRequest) -> ForgetMachineResponse;
}
