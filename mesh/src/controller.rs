//! networkd's mesh: follows `cluster.mesh` of the published config, runs
//! the [`Device`], and keeps its peers from discovery and gossip.
//!
//! Once a second it:
//! - reads this node's addresses (every 5 s): its endpoints and networks;
//! - reseals its own record when what it says changed (endpoints, the
//!   peers it sees directly and where) or every [`REPUBLISH`], and
//!   publishes it to the discovery service;
//! - lists the cluster's records from the service every [`FETCH`];
//! - turns the records into the device's peers ([`peers::peer_configs`]);
//! - gossips every record it knows to each peer it reaches directly, every
//!   [`GOSSIP`], and its own record to the control-plane endpoint's host
//!   while it reaches no one (how a node joins while the service is down);
//! - publishes `mesh-identity` and `mesh-peers`, and the control-plane
//!   nodes' API endpoints to the [`Balancer`].
//!
//! Gossip rides the mesh's UDP port ([`super::wire`]); records are sealed
//! by their authors, so no path they take can read or change them, and
//! each is opened on its own. A record that does not open (another
//! cluster's secret, forged, expired) is dropped and logged once a minute
//! per source.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use slate_common::hostport::HostPort as Target;
use slate_config::MeshBackend;
use slate_discovery::client;
use slate_discovery::gossip::{AffiliateTable, MAX_PEERS, Merged};
use slate_discovery::record::{ClusterKeys, ControlPlane, MAX_SEEN, Record, next_version};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use super::datapath::{Datapath, Task};
use super::device::{Device, DeviceStatus, Gossip, PeerState};
use super::kernel::KernelDevice;
use super::keys::NodeKey;
use super::resources::{MeshIdentity, MeshPeer, SharedMesh};
use super::routing::{self, PolicyRouting, RouteFilter};
use super::select::Path;
use super::{PORT, link, peers, tun, wire};
pub use crate::settings::MeshSettings;
use crate::settings::{PodPolicy, pod_networks};
use slate_common::ratelimit::LogLimiter;

/// The mesh interface.
pub const INTERFACE: &str = "slmesh0";
/// How long a record lives; it is resealed well before.
pub const RECORD_TTL: Duration = Duration::from_secs(300);
/// Resealed and republished at least this often.
pub const REPUBLISH: Duration = Duration::from_secs(60);
/// The discovery service is listed this often.
pub const FETCH: Duration = Duration::from_secs(10);
/// Records are passed to peers this often.
pub const GOSSIP: Duration = Duration::from_secs(10);
/// A changed record is resealed at most this often.
const RESEAL_GAP: Duration = Duration::from_secs(2);
/// How often the node's own addresses are read.
const ADDRESSES: Duration = Duration::from_secs(5);
/// One answer per source this often, to a node that introduced itself.
const REPLY_GAP: Duration = Duration::from_secs(5);
/// A call to the discovery service, all in.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Underlay MTU assumed for the mesh link (Ethernet).
const UNDERLAY_MTU: u32 = 1500;
/// Link kinds and name prefixes whose addresses are not the node's own
/// (see `read_addresses`). Not veth or dummy: a node in a container has a
/// veth uplink, and routed setups put the node IP on a dummy; the pods'
/// veths and kube-ipvs0 go by their names.
const INTERNAL_KINDS: &[&str] = &["vxlan", "geneve", "ipip", "sit", "wireguard", "tun"];
const INTERNAL_PREFIXES: &[&str] = &["cni", "docker", "cali", "cilium", "flannel", "kube-", "lxc"];
/// What a record lists at most, so it always seals within the 4 KiB a
/// record may have (about 50 bytes an endpoint or network, 100 a seen
/// peer): a node with more addresses or peers publishes the first.
const RECORD_ENDPOINTS: usize = 8;
const RECORD_SEEN: usize = 12;
/// After a failed publish, the next try waits this long (the loop must
/// not spend every tick on an unreachable service).
const PUBLISH_RETRY: Duration = Duration::from_secs(10);

/// What networkd gives the mesh.
#[derive(Clone)]
pub struct Context {
    /// The mesh's slice of the config feed: `None` while it is off.
    pub settings: watch::Receiver<Option<MeshSettings>>,
    pub key_file: PathBuf,
    pub sysfs: PathBuf,
    pub handle: rtnetlink::Handle,
    pub mesh: SharedMesh,
    /// The control-plane nodes' API endpoints the mesh learnt (when the
    /// API balancer is on): networkd forwards them to the balancer.
    pub control_plane: watch::Sender<Vec<Target>>,
}

/// Follows the config for ever: starts, restarts (on a change of what
/// the mesh needs) and stops the mesh.
pub async fn run(mut ctx: Context) {
    let mut running: Option<(MeshSettings, Task)> = None;
    loop {
        let now = ctx.settings.borrow_and_update().clone();
        if running.as_ref().map(|(w, _)| w) == now.as_ref() {
            if ctx.settings.changed().await.is_err() {
                return;
            }
            continue;
        }
        if running.take().is_some() {
            tracing::info!("mesh: stopping");
            ctx.mesh.set(None, Vec::new());
            ctx.control_plane.send_replace(Vec::new());
            // The TUN went with the task; its rules and routes did not,
            // nor a kernel WireGuard link (which holds the private key).
            if let Err(e) = routing::clear(&ctx.handle).await {
                tracing::warn!(
                    "mesh: removing its routes: {}",
                    slate_common::error::chain(&e)
                );
            }
            remove_link(&ctx.handle).await;
        }
        if let Some(w) = now {
            tracing::info!("mesh: starting");
            let task = tokio::spawn(keep_running(w.clone(), ctx.clone()));
            running = Some((w, Task(task)));
        }
    }
}

async fn keep_running(w: MeshSettings, ctx: Context) {
    loop {
        match Mesh::start(&w, &ctx).await {
            Ok(mesh) => mesh.run().await,
            Err(e) => tracing::error!(
                "mesh: {}; trying again in 5 s",
                slate_common::error::chain(&e)
            ),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Why the mesh did not start; [`keep_running`] logs it and tries again.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cluster.id and cluster.secret")]
    ClusterKeys(#[source] slate_discovery::record::KeyError),
    #[error("cluster.mesh.routeFilter")]
    RouteFilter(#[source] routing::FilterError),
    #[error("the mesh key in {}", path.display())]
    NodeKey {
        path: PathBuf,
        #[source]
        source: super::keys::KeyError,
    },
    #[error("opening the mesh TUN device")]
    Tun(#[source] tun::TunError),
    #[error("configuring the mesh link")]
    Link(#[source] link::MeshLinkError),
    #[error("binding UDP port {PORT}")]
    Bind(#[source] std::io::Error),
    #[error("marking the mesh socket")]
    Mark(#[source] std::io::Error),
    #[error(transparent)]
    Device(#[from] super::device::DeviceError),
    #[error(transparent)]
    Kernel(#[from] super::kernel::KernelError),
    #[error("binding the gossip socket")]
    GossipSocket(#[source] std::io::Error),
    #[error(transparent)]
    MeshLink(#[from] slate_netlink::link::LinkError),
    #[error("installing the mesh's routing rule")]
    Routing(#[source] routing::RoutingError),
}

struct Mesh {
    w: MeshSettings,
    ctx: Context,
    keys: Arc<ClusterKeys>,
    public_key: [u8; 32],
    node_id: String,
    prefix: IpNet,
    mesh_address: std::net::Ipv6Addr,
    table: AffiliateTable,
    datapath: Datapath,
    socket: Arc<UdpSocket>,
    inbox: mpsc::Receiver<Gossip>,
    addresses: Vec<IpAddr>,
    /// This node's pod networks ([`pod_networks`]).
    pod_networks: Vec<IpNet>,
    /// What the last sealed record said, without its version.
    said: Option<Record>,
    sealed_at: Option<Instant>,
    published: bool,
    publish_at: Instant,
    discovery: String,
    known_peers: HashSet<[u8; 32]>,
    replied: HashMap<IpAddr, Instant>,
    balancer_targets: Vec<Target>,
    routing: PolicyRouting,
    filter: RouteFilter,
    routed_at: Option<Instant>,
    log: LogLimiter,
}

impl Mesh {
    async fn start(w: &MeshSettings, ctx: &Context) -> Result<Mesh, StartError> {
        let keys =
            ClusterKeys::from_config(&w.cluster_id, &w.secret).map_err(StartError::ClusterKeys)?;
        let filter = RouteFilter::parse(&w.route_filter).map_err(StartError::RouteFilter)?;
        let key_file = key_file(&ctx.key_file);
        let key = NodeKey::load_or_create(&key_file).map_err(|source| StartError::NodeKey {
            path: key_file.clone(),
            source,
        })?;
        let public_key = key.public_bytes();
        let mesh_address = keys.mesh_address(&public_key);
        let prefix = IpNet::new(IpAddr::V6(mesh_address), 64)
            .expect("64 is a prefix length")
            .trunc();
        let configure = || async {
            link::configure(
                &ctx.handle,
                INTERFACE,
                IpAddr::V6(mesh_address),
                64,
                UNDERLAY_MTU,
            )
            .await
            .map_err(StartError::Link)
        };
        let started = match w.backend {
            MeshBackend::Userspace => {
                let tun = tun::Tun::open(INTERFACE).map_err(StartError::Tun)?;
                configure().await?;
                let udp = super::udp::bind(PORT).await.map_err(StartError::Bind)?;
                // The mesh's own datagrams to peers' node IPs must not be
                // routed into the mesh.
                routing::mark_socket(&udp, routing::MARK).map_err(StartError::Mark)?;
                let mut device = Device::new(key.clone(), tun, udp, Vec::new())?;
                device.ping_from(mesh_address);
                Datapath::user(device)
            }
            MeshBackend::Kernel => {
                // init loads the module with the link drivers, which may be
                // after this first try: keep_running tries again.
                let device =
                    KernelDevice::create(&ctx.handle, INTERFACE, &key, PORT, routing::MARK).await?;
                configure().await?;
                Datapath::kernel(device, routing::MARK)
                    .await
                    .map_err(StartError::GossipSocket)?
            }
        };
        let index = slate_netlink::link::by_name(&ctx.handle, INTERFACE)
            .await?
            .index;
        let routing = PolicyRouting::new(ctx.handle.clone(), index)
            .await
            .map_err(StartError::Routing)?;
        let node_id = slate_discovery::gossip::key_id(&public_key);
        let keys = Arc::new(keys);
        tracing::info!("mesh: node {node_id}, address {mesh_address}");
        Ok(Mesh {
            w: w.clone(),
            ctx: ctx.clone(),
            table: AffiliateTable::new(keys.clone(), node_id.clone(), MAX_PEERS).ids_are_keys(),
            keys,
            public_key,
            node_id,
            prefix,
            mesh_address,
            datapath: started.datapath,
            socket: started.socket,
            inbox: started.inbox,
            addresses: Vec::new(),
            pod_networks: Vec::new(),
            said: None,
            sealed_at: None,
            published: false,
            publish_at: Instant::now(),
            discovery: "not yet published".into(),
            known_peers: HashSet::new(),
            replied: HashMap::new(),
            balancer_targets: Vec::new(),
            routing,
            filter,
            routed_at: None,
            log: LogLimiter::new(Duration::from_secs(60)),
        })
    }

    async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut addresses_at: Option<Instant> = None;
        let mut fetched_at: Option<Instant> = None;
        let mut gossiped_at: Option<Instant> = None;
        loop {
            if self.datapath.is_finished() {
                return; // started again by keep_running
            }
            tokio::select! {
                _ = tick.tick() => {}
                Some((src, sealed)) = self.inbox.recv() => {
                    self.gossip_in(src, &sealed).await;
                    continue;
                }
            }
            if due(addresses_at, ADDRESSES) {
                addresses_at = Some(Instant::now());
                self.read_addresses().await;
            }
            let device = match self.datapath.status().await {
                Ok(status) => status,
                Err(e) => {
                    self.warn(
                        "status",
                        format!(
                            "mesh: reading the kernel's peers: {}",
                            slate_common::error::chain(&e)
                        ),
                    );
                    DeviceStatus::default()
                }
            };
            self.reseal(&device);
            if !self.published && Instant::now() >= self.publish_at {
                self.publish().await;
            }
            if due(fetched_at, FETCH) {
                fetched_at = Some(Instant::now());
                self.fetch().await;
            }
            self.table.expire(SystemTime::now());
            self.apply_peers(&device).await;
            if due(gossiped_at, GOSSIP) {
                gossiped_at = Some(Instant::now());
                self.gossip_out(&device).await;
            }
            self.show(&device);
        }
    }

    async fn read_addresses(&mut self) {
        match slate_netlink::state::read(&self.ctx.handle, &self.ctx.sysfs).await {
            Ok(actual) => {
                // Addresses on links that only exist inside the node
                // (containers' veths, CNI bridges and tunnels, kube-ipvs0)
                // are no endpoints, and would crowd the record.
                let internal: HashSet<&str> = actual
                    .links
                    .iter()
                    .filter(|l| {
                        l.info_kind
                            .as_deref()
                            .is_some_and(|k| INTERNAL_KINDS.contains(&k))
                            || INTERNAL_PREFIXES.iter().any(|p| l.name.starts_with(p))
                    })
                    .map(|l| l.name.as_str())
                    .collect();
                self.addresses = actual
                    .addresses
                    .iter()
                    .filter(|a| a.ifname != INTERFACE && !internal.contains(a.ifname.as_str()))
                    .map(|a| a.net.addr())
                    .collect();
                // Pod networks only from the links a CNI makes: a pod
                // subnet that overlaps a real LAN must not publish it.
                self.pod_networks = pod_networks(
                    actual
                        .addresses
                        .iter()
                        .filter(|a| internal.contains(a.ifname.as_str()))
                        .map(|a| a.net),
                    &self.w.pod_subnets,
                );
            }
            Err(e) => self.warn(
                "addresses",
                format!("reading addresses: {}", slate_common::error::chain(&e)),
            ),
        }
    }

    /// This node's record as it would say it now (version not set).
    fn record_now(&self, device: &DeviceStatus) -> Record {
        let mut endpoints = peers::own_endpoints(&self.addresses, &self.prefix, PORT);
        endpoints.truncate(RECORD_ENDPOINTS);
        let networks: Vec<IpNet> = endpoints
            .iter()
            .map(|e| IpNet::from(e.ip()))
            .chain(
                self.pod_networks
                    .iter()
                    .copied()
                    .filter(|_| self.w.advertise_pods),
            )
            .take(slate_discovery::record::MAX_NETWORKS)
            .collect();
        let direct = reached_directly(device);
        let control_plane = self
            .w
            .control_plane
            .then(|| endpoints.iter().find(|e| e.is_ipv4()).or(endpoints.first()))
            .flatten()
            .map(|e| ControlPlane {
                api_endpoint: SocketAddr::new(e.ip(), 6443),
            });
        Record {
            node_id: self.node_id.clone(),
            hostname: self.w.hostname.clone(),
            public_key: self.public_key,
            mesh_address: self.mesh_address,
            endpoints,
            networks,
            control_plane,
            // The kernel backend cannot relay: it says it sees no one, so
            // no peer picks it as a relay (its NAT mappings go unpublished).
            seen: match self.w.backend {
                MeshBackend::Userspace => peers::seen(direct, RECORD_SEEN.min(MAX_SEEN)),
                MeshBackend::Kernel => Vec::new(),
            },
            issued_ms: 0,
            ttl_secs: RECORD_TTL.as_secs() as u32,
        }
    }

    /// Reseals the own record when it says something new (at most every
    /// [`RESEAL_GAP`]) or is due for republishing.
    fn reseal(&mut self, device: &DeviceStatus) {
        let mut record = self.record_now(device);
        let changed = self.said.as_ref() != Some(&record);
        let age = self.sealed_at.map(|t| t.elapsed());
        let due = match age {
            None => true,
            Some(age) => (changed && age >= RESEAL_GAP) || age >= REPUBLISH,
        };
        if !due {
            return;
        }
        let said = record.clone();
        let last = self.table.own().map(|e| e.record.issued_ms);
        record.issued_ms = next_version(last, SystemTime::now());
        match self.table.set_own(record) {
            Ok(_) => {
                self.said = Some(said);
                self.sealed_at = Some(Instant::now());
                self.published = false;
            }
            Err(e) => self.warn("seal", format!("sealing this node's record: {e}")),
        }
    }

    async fn publish(&mut self) {
        let (Some(url), Some(own)) = (&self.w.discovery, self.table.own()) else {
            return;
        };
        let url = client::affiliate_url(url, &self.keys, &self.node_id);
        let sealed = own.sealed.clone();
        let publish = client::publish(&url, &self.keys, &sealed, RECORD_TTL);
        let result = tokio::time::timeout(CALL_TIMEOUT, publish).await;
        match result {
            Ok(Ok(())) => {
                self.published = true;
                self.discovery = format!("published at {}", rfc3339(SystemTime::now()));
            }
            Ok(Err(e)) => {
                self.publish_at = Instant::now() + PUBLISH_RETRY;
                self.discovery = format!("publishing failed: {e}");
                self.warn(
                    "publish",
                    format!("mesh: publishing to the discovery service: {e}"),
                );
            }
            Err(_) => {
                self.publish_at = Instant::now() + PUBLISH_RETRY;
                self.discovery = "publishing timed out".into();
                self.warn(
                    "publish",
                    "mesh: publishing to the discovery service timed out".into(),
                );
            }
        }
    }

    async fn fetch(&mut self) {
        let Some(url) = &self.w.discovery else {
            return;
        };
        let url = client::affiliates_url(url, &self.keys);
        match tokio::time::timeout(CALL_TIMEOUT, client::fetch(&url)).await {
            Ok(Ok(records)) => {
                let report = self
                    .table
                    .merge_all(records.iter().map(Vec::as_slice), SystemTime::now());
                if report.refused > 0 {
                    self.warn(
                        "refused",
                        format!(
                            "mesh: {} records from the discovery service did not open (another secret, forged or expired); ignored",
                            report.refused
                        ),
                    );
                }
            }
            Ok(Err(e)) => self.warn("fetch", format!("mesh: listing the discovery service: {e}")),
            Err(_) => self.warn(
                "fetch",
                "mesh: listing the discovery service timed out".into(),
            ),
        }
    }

    async fn apply_peers(&mut self, device: &DeviceStatus) {
        let now = SystemTime::now();
        let up_direct: HashSet<[u8; 32]> = reached_directly(device).map(|(key, _)| key).collect();
        let records: Vec<&Record> = self.table.peers(now).map(|e| &e.record).collect();
        let answering: HashSet<[u8; 32]> = device
            .peers
            .iter()
            .filter(|p| p.state != PeerState::Connecting)
            .map(|p| p.public_key)
            .collect();
        let pods = PodPolicy {
            own: &self.pod_networks,
            subnets: &self.w.pod_subnets,
            advertise: self.w.advertise_pods,
        };
        let filter = &self.filter;
        let configs = peers::peer_configs(
            &self.public_key,
            &self.addresses,
            &self.prefix,
            &records,
            &up_direct,
            &answering,
            |n| filter.allows(n) && pods.allows(n),
        );
        self.route(&answering, &configs).await;
        // Introduce this node to peers it has just learnt of, so they
        // need not wait for their next listing to accept its handshake.
        let new: Vec<SocketAddr> = configs
            .iter()
            .filter(|c| !self.known_peers.contains(&c.public_key))
            .flat_map(|c| c.endpoints.clone())
            .collect();
        self.known_peers = configs.iter().map(|c| c.public_key).collect();
        if let Err(e) = self.datapath.set_peers(configs, device).await {
            self.warn(
                "peers",
                format!(
                    "mesh: setting the kernel's peers: {}",
                    slate_common::error::chain(&e)
                ),
            );
        }
        if !new.is_empty()
            && let Some(own) = self.table.own()
        {
            let datagram = wire::gossip(&own.sealed);
            for to in new {
                send(&self.socket, &datagram, to).await;
            }
        }
    }

    /// Routes the networks of the peers that answer (directly or through
    /// a relay) into the mesh; a peer that does not answer gets none, so
    /// its node IPs fall back to the underlay. The table is checked
    /// against the kernel on a change and every 30 s.
    async fn route(
        &mut self,
        answering: &HashSet<[u8; 32]>,
        configs: &[super::device::PeerConfig],
    ) {
        let nets: Vec<IpNet> = configs
            .iter()
            .filter(|c| answering.contains(&c.public_key))
            // The mesh /64 is on the link already.
            .flat_map(|c| c.allowed_ips.iter().filter(|n| !self.prefix.contains(*n)))
            .copied()
            .collect();
        let wanted: std::collections::BTreeSet<IpNet> = nets.iter().map(IpNet::trunc).collect();
        if wanted == *self.routing.networks() && !due(self.routed_at, Duration::from_secs(30)) {
            return;
        }
        self.routed_at = Some(Instant::now());
        if let Err(e) = self.routing.set_networks(&nets).await {
            self.warn(
                "route",
                format!(
                    "mesh: routing peers' networks: {}",
                    slate_common::error::chain(&e)
                ),
            );
        }
    }

    /// Every record known, to each peer reached directly; while none is,
    /// this node's record to the seed.
    async fn gossip_out(&mut self, device: &DeviceStatus) {
        let targets: Vec<SocketAddr> = reached_directly(device).map(|(_, a)| a).collect();
        if targets.is_empty() {
            if let (Some(seed), Some(own)) = (self.w.seed, self.table.own())
                && !self.addresses.contains(&seed)
            {
                send(
                    &self.socket,
                    &wire::gossip(&own.sealed),
                    SocketAddr::new(seed, PORT),
                )
                .await;
            }
            return;
        }
        let datagrams = self.all_records();
        for to in targets {
            for d in &datagrams {
                send(&self.socket, d, to).await;
            }
        }
    }

    fn all_records(&self) -> Vec<Vec<u8>> {
        let now = SystemTime::now();
        self.table
            .own()
            .into_iter()
            .chain(self.table.peers(now))
            .map(|e| wire::gossip(&e.sealed))
            .collect()
    }

    /// A gossiped record. A node that introduces itself gets every record
    /// this one knows back (once per [`REPLY_GAP`] per source: the reply
    /// is larger than the request, so it must not be free to trigger).
    async fn gossip_in(&mut self, src: SocketAddr, sealed: &[u8]) {
        match self.table.merge_sealed(sealed, SystemTime::now()) {
            Ok(Merged::Added) => {
                let now = Instant::now();
                let recent = self
                    .replied
                    .get(&src.ip())
                    .is_some_and(|t| now.duration_since(*t) < REPLY_GAP);
                if !recent {
                    self.replied
                        .retain(|_, t| now.duration_since(*t) < REPLY_GAP);
                    self.replied.insert(src.ip(), now);
                    for d in self.all_records() {
                        send(&self.socket, &d, src).await;
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                if let Some(held) = self.log.allow(&src.ip().to_string(), Instant::now()) {
                    tracing::warn!(
                        "mesh: ignoring a record gossiped from {src}: {e} ({held} more since the last line)"
                    );
                }
            }
        }
    }

    fn show(&mut self, device: &DeviceStatus) {
        let now = SystemTime::now();
        let records: HashMap<[u8; 32], &Record> = self
            .table
            .peers(now)
            .map(|e| (e.record.public_key, &e.record))
            .collect();
        let name = |key: &[u8; 32]| {
            records
                .get(key)
                .map(|r| {
                    if r.hostname.is_empty() {
                        r.node_id.clone()
                    } else {
                        r.hostname.clone()
                    }
                })
                .unwrap_or_else(|| b64(key))
        };
        let peers = device
            .peers
            .iter()
            .filter_map(|p| {
                let r = records.get(&p.public_key)?;
                Some(MeshPeer {
                    node_id: r.node_id.clone(),
                    hostname: r.hostname.clone(),
                    public_key: b64(&p.public_key),
                    mesh_address: r.mesh_address,
                    endpoint: p.endpoint.map(|e| match e {
                        Path::Direct(a) => a.to_string(),
                        Path::Relay(k) => format!("relay {}", name(&k)),
                    }),
                    state: p.state,
                    last_handshake: p.last_handshake.map(rfc3339),
                    rx_bytes: p.rx_bytes,
                    tx_bytes: p.tx_bytes,
                    networks: r.networks.iter().map(ToString::to_string).collect(),
                })
            })
            .collect();
        let own = self.table.own().map(|e| &e.record);
        let identity = MeshIdentity {
            node_id: self.node_id.clone(),
            public_key: b64(&self.public_key),
            mesh_address: self.mesh_address,
            interface: INTERFACE.into(),
            backend: match self.w.backend {
                MeshBackend::Userspace => "userspace",
                MeshBackend::Kernel => "kernel",
            }
            .into(),
            listen_port: PORT,
            endpoints: own.map(|r| r.endpoints.clone()).unwrap_or_default(),
            networks: own
                .map(|r| r.networks.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
            discovery: self.discovery.clone(),
        };
        self.ctx.mesh.set(Some(identity), peers);
        // Control-plane nodes' API endpoints, for the balancer.
        let mut targets: Vec<Target> = records
            .values()
            .filter(|_| self.w.api_balancer)
            .filter_map(|r| r.control_plane.as_ref())
            .map(|cp| Target {
                host: cp.api_endpoint.ip().to_string(),
                port: cp.api_endpoint.port(),
            })
            .collect();
        targets.sort_by(|a, b| (&a.host, a.port).cmp(&(&b.host, b.port)));
        if targets != self.balancer_targets {
            self.ctx.control_plane.send_replace(targets.clone());
            self.balancer_targets = targets;
        }
    }

    fn warn(&mut self, what: &str, message: String) {
        if let Some(held) = self.log.allow(what, Instant::now()) {
            tracing::warn!("{message} ({held} more since the last line)");
        }
    }
}

/// Deletes the mesh link if it is still there (the kernel backend's).
async fn remove_link(handle: &rtnetlink::Handle) {
    let Ok(link) = slate_netlink::link::by_name(handle, INTERFACE).await else {
        return;
    };
    if let Err(e) = handle.link().del(link.index).execute().await {
        tracing::warn!("mesh: deleting {INTERFACE}: {e}");
    }
}

/// Where the key goes when STATE is not mounted (a node without a disk):
/// tmpfs, so the mesh identity lasts until the next boot, as the config
/// does then.
const VOLATILE_KEY: &str = "/run/slate/mesh.key";

fn key_file(wanted: &std::path::Path) -> PathBuf {
    if wanted.parent().is_none_or(std::path::Path::is_dir) {
        return wanted.to_owned();
    }
    tracing::warn!(
        "mesh: {} is not mounted: the mesh key goes to {VOLATILE_KEY} and lasts until the next boot",
        wanted
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    VOLATILE_KEY.into()
}

/// The peers this node reaches directly now, and where: what its record
/// says it sees, whom it may pick as relays, where it gossips.
fn reached_directly(device: &DeviceStatus) -> impl Iterator<Item = ([u8; 32], SocketAddr)> + '_ {
    device
        .peers
        .iter()
        .filter_map(|p| match (p.state, p.endpoint) {
            (PeerState::Up, Some(Path::Direct(a))) => Some((p.public_key, a)),
            _ => None,
        })
}

fn due(last: Option<Instant>, every: Duration) -> bool {
    last.is_none_or(|t| t.elapsed() >= every)
}

async fn send(socket: &UdpSocket, data: &[u8], to: SocketAddr) {
    if let Err(e) = socket.send_to(data, to).await {
        tracing::debug!("mesh: gossip to {to}: {e}");
    }
}

fn b64(key: &[u8; 32]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(key)
}

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
