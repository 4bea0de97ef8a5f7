//! networkd's state as resources, served on its Unix socket with the
//! `slate.resource.v1` service; apid forwards `slatectl get TYPE [-w]` here.
//!
//! `links`, `addresses` and `routes` come from the kernel, the source of
//! truth: a List reads it afresh and a Watch re-reads it after each
//! rtnetlink event and sends what changed. `hostname`, `resolvers` and
//! `networkstatus` are networkd's own decisions, and wake a Watch when they
//! change, as does `apibalancer` (the API balancer's endpoints and their
//! health) and `mesh-identity` / `mesh-peers` (the WireGuard mesh); only
//! `timestatus` is looked at every few seconds.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use netlink_packet_route::route::RouteProtocol;
use rtnetlink::Handle;
use serde::Serialize;
use slate_proto::resource::resource_service_server::ResourceService;
use slate_proto::resource::watch_event::Kind;
use slate_proto::resource::{ListRequest, ListResponse, Resource, WatchEvent, WatchRequest};
use tonic::{Request, Response, Status};

use crate::names::SharedNames;
use crate::reconcile::{SharedNetworkStatus, netlink};
use crate::timesync::SharedTimeStatus;

/// What networkd decided, beside what the kernel says.
#[derive(Clone)]
pub struct Sources {
    pub time: SharedTimeStatus,
    pub names: SharedNames,
    pub network: SharedNetworkStatus,
    pub balancer: crate::balancer::Balancer,
    pub mesh: crate::mesh::resources::SharedMesh,
}

impl Sources {
    /// The singleton resource of a type networkd keeps itself, if `kind`
    /// is one. Its id is `node`.
    fn own(&self, kind: &str) -> Option<Resource> {
        let spec_json = match kind {
            "timestatus" => json(&*self.time.lock().unwrap_or_else(|e| e.into_inner())),
            "hostname" => json(&self.names.hostname()),
            "resolvers" => json(&self.names.resolvers()),
            "networkstatus" => json(&self.network.get()),
            "apibalancer" => json(&self.balancer.status()),
            "mesh-identity" => json(&self.mesh.identity()?),
            _ => return None,
        };
        Some(Resource {
            r#type: kind.to_owned(),
            id: "node".to_owned(),
            spec_json,
        })
    }

    /// Wakes when one of networkd's own resources of `kind` changes.
    fn changes(&self, kind: &str) -> Option<tokio::sync::watch::Receiver<()>> {
        match kind {
            "hostname" | "resolvers" => Some(self.names.subscribe()),
            "networkstatus" => Some(self.network.subscribe()),
            "apibalancer" => Some(self.balancer.subscribe()),
            "mesh-identity" | "mesh-peers" => Some(self.mesh.subscribe()),
            _ => None,
        }
    }
}

fn json(spec: &impl Serialize) -> String {
    serde_json::to_string(spec).unwrap_or_default()
}

/// The types networkd owns.
pub use slate_common::constants::NETWORKD_RESOURCE_TYPES as TYPES;

#[derive(Serialize)]
struct LinkSpec {
    name: String,
    index: u32,
    kind: String,
    mtu: Option<u32>,
    up: bool,
    mac: String,
    controller: Option<String>,
}

#[derive(Serialize)]
struct AddressSpec {
    link: String,
    address: String,
    family: &'static str,
}

#[derive(Serialize)]
struct RouteSpec {
    link: String,
    destination: String,
    gateway: Option<String>,
    metric: u32,
    protocol: String,
}

/// Open watches at most: each holds a netlink socket and a task.
const MAX_WATCHES: usize = 16;

pub struct StatusApi {
    handle: Handle,
    sysfs: PathBuf,
    sources: Sources,
    watches: Arc<tokio::sync::Semaphore>,
}

impl StatusApi {
    pub fn new(handle: Handle, sysfs: PathBuf, sources: Sources) -> Self {
        Self {
            handle,
            sysfs,
            sources,
            watches: Arc::new(tokio::sync::Semaphore::new(MAX_WATCHES)),
        }
    }
}

fn resource(kind: &str, id: String, spec: &impl Serialize) -> Resource {
    Resource {
        r#type: kind.to_owned(),
        id,
        spec_json: json(spec),
    }
}

/// All resources of `kind`, by id.
pub async fn snapshot(
    handle: &Handle,
    sysfs: &std::path::Path,
    sources: &Sources,
    kind: &str,
) -> Result<BTreeMap<String, Resource>, Status> {
    if !TYPES.contains(&kind) {
        return Err(Status::not_found(format!(
            "networkd has no resource type {kind:?} (it has {})",
            TYPES.join(", ")
        )));
    }
    if let Some(own) = sources.own(kind) {
        return Ok(BTreeMap::from([(own.id.clone(), own)]));
    }
    match kind {
        // Nothing while the mesh is off.
        "mesh-identity" => return Ok(BTreeMap::new()),
        "mesh-peers" => {
            return Ok(sources
                .mesh
                .peers()
                .into_iter()
                .map(|(id, p)| (id.clone(), resource(kind, id, &p)))
                .collect());
        }
        _ => {}
    }
    let unavailable =
        |e: netlink::NetlinkError| Status::unavailable(slate_common::error::chain(&e));
    let actual = netlink::read(handle, sysfs).await.map_err(unavailable)?;
    let names: BTreeMap<u32, String> = actual
        .links
        .iter()
        .map(|l| (l.index, l.name.clone()))
        .collect();
    let mut out = BTreeMap::new();
    match kind {
        "links" => {
            for l in &actual.links {
                let spec = LinkSpec {
                    name: l.name.clone(),
                    index: l.index,
                    kind: l.info_kind.clone().unwrap_or_else(|| "device".into()),
                    mtu: l.mtu,
                    up: l.up,
                    mac: l.mac.clone(),
                    controller: l.controller.and_then(|c| names.get(&c).cloned()),
                };
                out.insert(l.name.clone(), resource(kind, l.name.clone(), &spec));
            }
        }
        "addresses" => {
            for a in &actual.addresses {
                let id = format!("{}/{}", a.ifname, a.net);
                let spec = AddressSpec {
                    link: a.ifname.clone(),
                    address: a.net.to_string(),
                    family: if a.net.addr().is_ipv4() {
                        "inet"
                    } else {
                        "inet6"
                    },
                };
                out.insert(id.clone(), resource(kind, id, &spec));
            }
        }
        _ => {
            let routes = netlink::main_routes(handle, &names)
                .await
                .map_err(unavailable)?;
            for r in routes {
                let protocol = match r.protocol {
                    RouteProtocol::Other(netlink::PROTO_SLATE) => "slate".to_owned(),
                    // Display is "Dhcp" but "kernel": one spelling, as `ip route` has.
                    p => p.to_string().to_lowercase(),
                };
                let id = format!("{}/{}/{}", r.spec.ifname, r.spec.dst, r.spec.metric);
                let spec = RouteSpec {
                    link: r.spec.ifname,
                    destination: r.spec.dst.to_string(),
                    gateway: r.spec.gateway.map(|g| g.to_string()),
                    metric: r.spec.metric,
                    protocol,
                };
                out.insert(id.clone(), resource(kind, id, &spec));
            }
        }
    }
    Ok(out)
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl ResourceService for StatusApi {
    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let kind = request.into_inner().r#type;
        let all = snapshot(&self.handle, &self.sysfs, &self.sources, &kind).await?;
        Ok(Response::new(ListResponse {
            resources: all.into_values().collect(),
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let kind = request.into_inner().r#type;
        let permit = Arc::clone(&self.watches).try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!("already {MAX_WATCHES} watches open; try later"))
        })?;
        // Subscribe first, then read: a change in between is not lost.
        let (conn, handle, mut events) =
            rtnetlink::new_multicast_connection(&netlink::EVENT_GROUPS)
                .map_err(|e| Status::unavailable(format!("opening rtnetlink: {e}")))?;
        let conn = tokio::spawn(conn);
        let mut own_changes = self.sources.changes(&kind);
        let mut current = snapshot(&handle, &self.sysfs, &self.sources, &kind).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let sysfs = self.sysfs.clone();
        let sources = self.sources.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let event = |kind: Kind, r: Resource| WatchEvent {
                kind: kind as i32,
                resource: Some(r),
            };
            let mut initial: Vec<WatchEvent> = current
                .values()
                .map(|r| event(Kind::Existing, r.clone()))
                .collect();
            initial.push(WatchEvent {
                kind: Kind::Bookmark as i32,
                resource: None,
            });
            // The time status changes without a kernel event: look again
            // every few seconds for that type.
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            let mut pending = initial;
            loop {
                for e in pending.drain(..) {
                    if tx.send(Ok(e)).await.is_err() {
                        conn.abort();
                        return; // the client went away
                    }
                }
                tokio::select! {
                    // A client that left is noticed now, not at the next change.
                    _ = tx.closed() => break,
                    more = netlink::next_burst(&mut events) => if !more { break },
                    _ = tick.tick(), if kind == "timestatus" => {}
                    Ok(()) = async {
                        match own_changes.as_mut() {
                            Some(rx) => rx.changed().await,
                            None => std::future::pending().await,
                        }
                    } => {}
                }
                let Ok(now) = snapshot(&handle, &sysfs, &sources, &kind).await else {
                    continue;
                };
                for (id, r) in &now {
                    match current.get(id) {
                        None => pending.push(event(Kind::Created, r.clone())),
                        Some(old) if old != r => pending.push(event(Kind::Updated, r.clone())),
                        Some(_) => {}
                    }
                }
                for (id, r) in &current {
                    if !now.contains_key(id) {
                        pending.push(event(Kind::Deleted, r.clone()));
                    }
                }
                current = now;
            }
            conn.abort();
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Serves the status on `socket` until the process ends: mode 0660, for
/// root and apid's group (the runtime directory's, set by init), since
/// apid forwards `get` calls here and runs as its own user.
pub async fn serve(socket: PathBuf, handle: Handle, sysfs: PathBuf, sources: Sources) {
    use std::os::unix::fs::PermissionsExt as _;
    let _ = std::fs::remove_file(&socket);
    let listener = match tokio::net::UnixListener::bind(&socket) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("listening on {}: {e}", socket.display());
            return;
        }
    };
    let _ = std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660));
    let service = slate_proto::resource::resource_service_server::ResourceServiceServer::new(
        StatusApi::new(handle, sysfs, sources),
    );
    if let Err(e) = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
        .await
    {
        tracing::error!("serving {}: {e}", socket.display());
    }
}
