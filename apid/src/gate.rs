//! The gate in front of every service apid serves (the machine and
//! resource APIs and reflection): each request's path is looked up in
//! [`RULES`](crate::auth::RULES) and the caller checked against it before
//! any handler runs. A path the table does not list is refused, so a
//! service added later cannot be reached until someone decides who may.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::Status;

use crate::auth::access_for;
use crate::machine::Authorizer;

#[derive(Clone)]
pub struct GateLayer {
    auth: Authorizer,
}

impl GateLayer {
    pub fn new(auth: Authorizer) -> Self {
        Self { auth }
    }
}

impl<S> tower::Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            auth: self.auth.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    auth: Authorizer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for Gate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        match self.check(&request) {
            Ok(()) => Box::pin(self.inner.call(request)),
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
        }
    }
}

impl<S> Gate<S> {
    fn check<B>(&self, request: &http::Request<B>) -> Result<(), Status> {
        let path = request.uri().path();
        let access = access_for(path)
            .ok_or_else(|| Status::unimplemented(format!("{path} is not served")))?;
        // The peer's certificates, from the extensions tonic put there
        // for this connection, and the headers: a forwarding control plane
        // names its caller's role in them (`auth::caller_role`).
        self.auth.check(&crate::auth::caller_of(request), access)
    }
}
