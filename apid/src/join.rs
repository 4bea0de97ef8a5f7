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

/// machined's answer, its status kept; a machined that does not answer is
/// named as such.
fn from_machined<R>(result: Result<Response<R>, Status>) -> Result<Response<R>, Status> {
    result.map_err(|s| {
        if s.code() == tonic::Code::Unavailable && std::error::Error::source(&s).is_some() {
            Status::unavailable(format!("machined is not answering: {}", s.message()))
        } else {
            s
        }
    })
}

macro_rules! forward {
    ($($method:ident($req:ty) -> $resp:ty;)*) => {
        #[tonic::async_trait]
        impl JoinService for JoinApi {
            $(
                async fn $method(&self, request: Request<$req>) -> Result<Response<$resp>, Status> {
                    let mut machined = self.machined.clone();
                    from_machined(machined.$method(Request::new(request.into_inner())).await)
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
