//! `slate.resource.v1.ResourceService`: authorizes, then forwards by type
//! to the daemon that owns it (links, addresses and routes: networkd).

use std::pin::Pin;

use futures::Stream;
use slate_proto::resource::resource_service_client::ResourceServiceClient;
use slate_proto::resource::resource_service_server::ResourceService;
use slate_proto::resource::{ListRequest, ListResponse, WatchEvent, WatchRequest};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::auth::MAINTENANCE_TYPES;
use crate::machine::Authorizer;

/// The types networkd owns; every other type is unknown for now.
use slate_common::constants::NETWORKD_RESOURCE_TYPES as NETWORKD_TYPES;

pub struct ResourceApi {
    auth: Authorizer,
    networkd: ResourceServiceClient<Channel>,
}

impl ResourceApi {
    pub fn new(auth: Authorizer, networkd: ResourceServiceClient<Channel>) -> Self {
        Self { auth, networkd }
    }

    /// The owner of `kind`; in maintenance mode only the types of
    /// [`MAINTENANCE_TYPES`] are answered.
    fn route(&self, kind: &str) -> Result<ResourceServiceClient<Channel>, Status> {
        // The gate checked the caller; in maintenance mode it was let in
        // without a certificate, for the types the proto names only.
        if self.auth.maintenance().is_some() && !MAINTENANCE_TYPES.contains(&kind) {
            return Err(Status::failed_precondition(format!(
                "the node is in maintenance mode; only {} are shown",
                MAINTENANCE_TYPES.join(", ")
            )));
        }
        if NETWORKD_TYPES.contains(&kind) {
            Ok(self.networkd.clone())
        } else {
            Err(Status::not_found(format!(
                "no resource type {kind:?} (there are {})",
                NETWORKD_TYPES.join(", ")
            )))
        }
    }
}

fn owner_down(s: Status) -> Status {
    if s.code() == tonic::Code::Unavailable {
        Status::unavailable(format!("networkd is not answering: {}", s.message()))
    } else {
        s
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl ResourceService for ResourceApi {
    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let mut owner = self.route(&request.get_ref().r#type)?;
        owner
            .list(Request::new(request.into_inner()))
            .await
            .map_err(owner_down)
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let mut owner = self.route(&request.get_ref().r#type)?;
        let stream = owner
            .watch(Request::new(request.into_inner()))
            .await
            .map_err(owner_down)?
            .into_inner();
        Ok(Response::new(Box::pin(stream)))
    }
}
