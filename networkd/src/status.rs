//! networkd's state as resources (`links`, `addresses`, `routes`,
//! `timestatus`), served
//! on its Unix socket with the `slate.resource.v1` service; apid forwards
//! `slatectl get links|addresses|routes [-w]` here.
//!
//! The kernel is the source of truth, so a List reads it afresh and a
//! Watch re-reads it after each rtnetlink event and sends what changed:
//! nothing polls.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt as _, TryStreamExt as _};
use netlink_packet_route::route::{RouteAttribute, RouteProtocol};
use rtnetlink::{Handle, MulticastGroup, RouteMessageBuilder};
use serde::Serialize;
use slate_proto::resource::resource_service_server::ResourceService;
use slate_proto::resource::watch_event::Kind;
use slate_proto::resource::{ListRequest, ListResponse, Resource, WatchEvent, WatchRequest};
use tonic::{Request, Response, Status};

use crate::reconcile::netlink;
use crate::timesync::SharedTimeStatus;

/// The types networkd owns.
pub const TYPES: &[&str] = &["links", "addresses", "routes", "timestatus"];

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
    table: u32,
}

pub struct StatusApi {
    handle: Handle,
    sysfs: PathBuf,
    time: SharedTimeStatus,
}

impl StatusApi {
    pub fn new(handle: Handle, sysfs: PathBuf, time: SharedTimeStatus) -> Self {
        Self {
            handle,
            sysfs,
            time,
        }
    }
}

fn resource(kind: &str, id: String, spec: &impl Serialize) -> Resource {
    Resource {
        r#type: kind.to_owned(),
        id,
        spec_json: serde_json::to_string(spec).unwrap_or_default(),
    }
}

/// All resources of `kind`, by id.
pub async fn snapshot(
    handle: &Handle,
    sysfs: &std::path::Path,
    time: &SharedTimeStatus,
    kind: &str,
) -> Result<BTreeMap<String, Resource>, Status> {
    if !TYPES.contains(&kind) {
        return Err(Status::not_found(format!(
            "networkd has no resource type {kind:?} (it has {})",
            TYPES.join(", ")
        )));
    }
    if kind == "timestatus" {
        let status = time.lock().unwrap_or_else(|e| e.into_inner()).clone();
        return Ok(BTreeMap::from([(
            "node".to_owned(),
            resource(kind, "node".into(), &status),
        )]));
    }
    let unavailable =
        |e: netlink::NetlinkError| Status::unavailable(slate_machinery::error::chain(&e));
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
            for template in [
                RouteMessageBuilder::<Ipv4Addr>::new().build(),
                RouteMessageBuilder::<Ipv6Addr>::new().build(),
            ] {
                let mut stream = handle.route().get(template).execute();
                while let Some(msg) = stream
                    .try_next()
                    .await
                    .map_err(|e| Status::unavailable(format!("reading routes: {e}")))?
                {
                    let (mut dst, mut gw, mut oif, mut metric, mut table) =
                        (None, None, None, 0, u32::from(msg.header.table));
                    for attr in &msg.attributes {
                        match attr {
                            RouteAttribute::Destination(a) => dst = netlink::ip_of(a),
                            RouteAttribute::Gateway(a) => gw = netlink::ip_of(a),
                            RouteAttribute::Oif(i) => oif = Some(*i),
                            RouteAttribute::Priority(p) => metric = *p,
                            RouteAttribute::Table(t) => table = *t,
                            _ => {}
                        }
                    }
                    // Local and broadcast routes are the kernel's bookkeeping.
                    if table != 254 {
                        continue;
                    }
                    let v6 =
                        msg.header.address_family == netlink_packet_route::AddressFamily::Inet6;
                    let destination = match dst {
                        Some(ip) => format!("{ip}/{}", msg.header.destination_prefix_length),
                        None if v6 => "::/0".into(),
                        None => "0.0.0.0/0".into(),
                    };
                    let link = oif.and_then(|i| names.get(&i).cloned()).unwrap_or_default();
                    let protocol = match msg.header.protocol {
                        RouteProtocol::Other(netlink::PROTO_SLATE) => "slate".to_owned(),
                        // Display is "Dhcp" but "kernel": one spelling, as `ip route` has.
                        p => p.to_string().to_lowercase(),
                    };
                    let id = format!("{link}/{destination}/{metric}");
                    let spec = RouteSpec {
                        link,
                        destination,
                        gateway: gw.map(|g| g.to_string()),
                        metric,
                        protocol,
                        table,
                    };
                    out.insert(id.clone(), resource(kind, id, &spec));
                }
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
        let all = snapshot(&self.handle, &self.sysfs, &self.time, &kind).await?;
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
        let mut current = snapshot(&self.handle, &self.sysfs, &self.time, &kind).await?;
        let groups = [
            MulticastGroup::Link,
            MulticastGroup::Ipv4Ifaddr,
            MulticastGroup::Ipv6Ifaddr,
            MulticastGroup::Ipv4Route,
            MulticastGroup::Ipv6Route,
        ];
        let (conn, handle, mut events) = rtnetlink::new_multicast_connection(&groups)
            .map_err(|e| Status::unavailable(format!("opening rtnetlink: {e}")))?;
        let conn = tokio::spawn(conn);
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let sysfs = self.sysfs.clone();
        let time = self.time.clone();
        tokio::spawn(async move {
            let event = |kind: Kind, r: Resource| WatchEvent {
                kind: kind as i32,
                resource: Some(r),
            };
            for r in current.values() {
                if tx.send(Ok(event(Kind::Existing, r.clone()))).await.is_err() {
                    conn.abort();
                    return;
                }
            }
            let bookmark = WatchEvent {
                kind: Kind::Bookmark as i32,
                resource: None,
            };
            if tx.send(Ok(bookmark)).await.is_err() {
                conn.abort();
                return;
            }
            while events.next().await.is_some() {
                // Events come in bursts; one read after the burst.
                tokio::time::sleep(Duration::from_millis(50)).await;
                while let Ok(Some(_)) = tokio::time::timeout(Duration::ZERO, events.next()).await {}
                let Ok(now) = snapshot(&handle, &sysfs, &time, &kind).await else {
                    continue;
                };
                let mut changes = Vec::new();
                for (id, r) in &now {
                    match current.get(id) {
                        None => changes.push(event(Kind::Created, r.clone())),
                        Some(old) if old != r => changes.push(event(Kind::Updated, r.clone())),
                        Some(_) => {}
                    }
                }
                for (id, r) in &current {
                    if !now.contains_key(id) {
                        changes.push(event(Kind::Deleted, r.clone()));
                    }
                }
                for c in changes {
                    if tx.send(Ok(c)).await.is_err() {
                        conn.abort();
                        return; // the client went away
                    }
                }
                current = now;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Serves the status on `socket` (mode 0600) until the process ends.
pub async fn serve(socket: PathBuf, handle: Handle, sysfs: PathBuf, time: SharedTimeStatus) {
    use std::os::unix::fs::PermissionsExt as _;
    let _ = std::fs::remove_file(&socket);
    let listener = match tokio::net::UnixListener::bind(&socket) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("listening on {}: {e}", socket.display());
            return;
        }
    };
    let _ = std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600));
    let service = slate_proto::resource::resource_service_server::ResourceServiceServer::new(
        StatusApi::new(handle, sysfs, time),
    );
    if let Err(e) = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
        .await
    {
        tracing::error!("serving {}: {e}", socket.display());
    }
}
