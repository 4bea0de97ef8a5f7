//! Kernel WireGuard, configured over netlink: the faster datapath where
//! the kernel has the module (Debian's has; this build machine's has not).
//!
//! - The link (kind `wireguard`) is made and deleted over rtnetlink, like
//!   networkd's other links.
//! - Keys, port, fwmark and peers go over generic netlink (family
//!   `wireguard`, commands `WG_CMD_SET_DEVICE` / `WG_CMD_GET_DEVICE`), on a
//!   connection of the device's own (netlink-proto, rtnetlink's own; the
//!   family id is looked up with [`slate_netlink::genl::resolve_family`]).
//! - [`KernelDevice::set_peers`] sends a diff against what the kernel holds,
//!   never `WGDEVICE_F_REPLACE_PEERS`: replacing drops every peer's session,
//!   and the controller re-applies the peer set whenever discovery changes.
//! - Messages are split so that no peer list exceeds [`MESSAGE_BUDGET`]
//!   (a netlink attribute's length is 16 bits; `wg(8)` splits the same way).
//! - What is read back is bounded ([`MAX_PEERS`], [`MAX_ALLOWED_IPS`]):
//!   the kernel is trusted, but a surprise is an error, never a panic or
//!   an unbounded allocation.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use futures::{StreamExt, TryStreamExt};
use ipnet::IpNet;
use netlink_packet_core::{
    DecodeError, Emitable, ErrorMessage, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkPayload,
};
use netlink_packet_generic::{GenlFamily, GenlMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute,
    WireguardCmd, WireguardMessage, WireguardPeer, WireguardPeerAttribute, WireguardPeerFlags,
    WireguardTimeSpec,
};
use netlink_proto::{ConnectionHandle, NetlinkProtoError};
use rtnetlink::{Handle, LinkUnspec, LinkWireguard};
use slate_netlink::genl::{self, FamilyError, NETLINK_GENERIC, RawGenl, request};

use super::device::{DeviceStatus, PeerConfig, PeerStatus};
use super::keys::NodeKey;

/// Largest peer list (encoded) in one `WG_CMD_SET_DEVICE`.
pub const MESSAGE_BUDGET: usize = 16 * 1024;
/// Most peers read back from the kernel.
pub const MAX_PEERS: usize = 1 << 16;
/// Most allowed IPs read back from the kernel, all peers together.
pub const MAX_ALLOWED_IPS: usize = 1 << 20;

const EOPNOTSUPP: i32 = libc::EOPNOTSUPP;
const ENODEV: i32 = libc::ENODEV;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The kernel has no WireGuard: the caller falls back to the userspace
    /// datapath.
    #[error(
        "{link}: this kernel has no WireGuard support ({reason}); load the wireguard module or use the userspace mesh"
    )]
    Unsupported { link: String, reason: String },
    #[error("{link}: {op}")]
    Link {
        link: String,
        op: &'static str,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{link}: exists and is a {kind} link, not wireguard; not taking it over")]
    NotWireguard { link: String, kind: String },
    #[error("{link}: opening a generic netlink socket")]
    Socket {
        link: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{link}: {op}")]
    Genetlink {
        link: String,
        op: &'static str,
        #[source]
        source: NetlinkProtoError,
    },
    #[error("{link}: {op}: the kernel refused")]
    Kernel {
        link: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{link}: {op}: decoding the kernel's answer")]
    Decode {
        link: String,
        op: &'static str,
        #[source]
        source: DecodeError,
    },
    #[error("{link}: {op}: {what}")]
    Unexpected {
        link: String,
        op: &'static str,
        what: String,
    },
    #[error("{link}: {op}: peer {key} is configured twice")]
    DuplicatePeer {
        link: String,
        op: &'static str,
        key: String,
    },
    #[error("{link}: {op}: no peer {key}")]
    UnknownPeer {
        link: String,
        op: &'static str,
        key: String,
    },
}

/// One peer as the kernel reports it: [`PeerStatus`] plus what was
/// configured, for checks and a later `mesh-peers` resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelPeer {
    pub public_key: [u8; 32],
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: Vec<IpNet>,
    pub persistent_keepalive: Option<u16>,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub last_handshake: Option<SystemTime>,
}

/// A kernel peer counts as up while its last handshake is younger than
/// this: WireGuard rekeys every 2 minutes while packets flow (keepalives
/// included) and drops a session after 3 (REJECT_AFTER_TIME).
const UP_AFTER_HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(180);

impl From<KernelPeer> for PeerStatus {
    fn from(p: KernelPeer) -> Self {
        let fresh = p
            .last_handshake
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < UP_AFTER_HANDSHAKE);
        PeerStatus {
            public_key: p.public_key,
            endpoint: p.endpoint.map(super::select::Path::Direct),
            state: if fresh {
                super::device::PeerState::Up
            } else {
                super::device::PeerState::Connecting
            },
            tx_bytes: p.tx_bytes,
            rx_bytes: p.rx_bytes,
            last_handshake: p.last_handshake,
        }
    }
}

/// A kernel WireGuard link and the generic netlink connection that
/// configures it. Dropping it closes the connection and leaves the link
/// (a restarted networkd takes it over); [`KernelDevice::delete`] removes
/// it.
pub struct KernelDevice {
    name: String,
    index: u32,
    genl: ConnectionHandle<RawGenl>,
    /// The generic netlink family id of `wireguard` (the kernel assigns it
    /// when the module loads).
    family: u16,
    connection: tokio::task::AbortHandle,
    /// Peers we configured (or found on take-over): `set_endpoint` only
    /// updates these.
    peers: HashSet<[u8; 32]>,
}

impl std::fmt::Debug for KernelDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelDevice")
            .field("name", &self.name)
            .field("index", &self.index)
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl Drop for KernelDevice {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl KernelDevice {
    /// Creates (or takes over an existing) link `name` of kind wireguard,
    /// sets private key, listen port and fwmark, brings it up.
    /// Err(KernelError::Unsupported) when the kernel has no WireGuard
    /// (EOPNOTSUPP / unknown kind / no genl family "wireguard").
    ///
    /// A taken-over link keeps its peers (and their sessions) until the
    /// next [`KernelDevice::set_peers`].
    pub async fn create(
        handle: &Handle,
        name: &str,
        key: &NodeKey,
        port: u16,
        fwmark: u32,
    ) -> Result<KernelDevice, KernelError> {
        let (index, created) = match find_link(handle, name).await? {
            Some(index) => {
                tracing::info!("{name}: taking over the existing wireguard link");
                (index, false)
            }
            None => {
                handle
                    .link()
                    .add(LinkWireguard::new(name).build())
                    .execute()
                    .await
                    .map_err(|source| match slate_netlink::errno(&source) {
                        Some(EOPNOTSUPP) => KernelError::Unsupported {
                            link: name.to_owned(),
                            reason: "the link kind wireguard is unknown".into(),
                        },
                        _ => KernelError::Link {
                            link: name.to_owned(),
                            op: "creating the wireguard link",
                            source,
                        },
                    })?;
                let index =
                    find_link(handle, name)
                        .await?
                        .ok_or_else(|| KernelError::Unexpected {
                            link: name.to_owned(),
                            op: "creating the wireguard link",
                            what: "the link is gone right after its creation".into(),
                        })?;
                (index, true)
            }
        };
        let configured = Self::configure(handle, name, index, key, port, fwmark).await;
        if configured.is_err() && created {
            // Leave nothing half-made behind; the first error is the one
            // that matters.
            if let Err(e) = handle.link().del(index).execute().await {
                tracing::warn!("{name}: removing the unconfigured link: {e}");
            }
        }
        configured
    }

    async fn configure(
        handle: &Handle,
        name: &str,
        index: u32,
        key: &NodeKey,
        port: u16,
        fwmark: u32,
    ) -> Result<KernelDevice, KernelError> {
        let (connection, genl, _) =
            netlink_proto::new_connection(NETLINK_GENERIC).map_err(|source| {
                KernelError::Socket {
                    link: name.to_owned(),
                    source,
                }
            })?;
        let connection = tokio::spawn(connection).abort_handle();
        let family = match genl::resolve_family(&genl, WireguardMessage::family_name()).await {
            Ok(family) => family,
            Err(e) => {
                connection.abort();
                return Err(family_error(name, e));
            }
        };
        let mut device = KernelDevice {
            name: name.to_owned(),
            index,
            genl,
            family,
            connection,
            peers: HashSet::new(),
        };
        const OP: &str = "setting the private key, listen port and fwmark";
        let attributes = vec![
            WireguardAttribute::IfIndex(index),
            WireguardAttribute::PrivateKey(key.secret().to_bytes()),
            WireguardAttribute::ListenPort(port),
            WireguardAttribute::Fwmark(fwmark),
        ];
        device.send_set(OP, attributes).await?;
        device.peers = device
            .peers()
            .await?
            .into_iter()
            .map(|p| p.public_key)
            .collect();
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|source| KernelError::Link {
                link: name.to_owned(),
                op: "setting the link up",
                source,
            })?;
        Ok(device)
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Replaces the peer set (WGDEVICE_F_REPLACE_PEERS semantics or a
    /// diff): endpoint = the first of `endpoints`, allowed IPs, persistent
    /// keepalive.
    ///
    /// A diff: peers no longer wanted are removed, the others added or
    /// updated in place (their sessions survive). A peer that has an
    /// endpoint keeps it (a NAT mapping it roamed to, or what the
    /// controller picked with [`KernelDevice::set_endpoint`]); a new one
    /// gets the first. Partly applied on error; the next call completes it.
    pub async fn set_peers(&mut self, peers: &[PeerConfig]) -> Result<(), KernelError> {
        const OP: &str = "setting peers";
        let mut wanted = HashSet::new();
        for p in peers {
            if !wanted.insert(p.public_key) {
                return Err(KernelError::DuplicatePeer {
                    link: self.name.clone(),
                    op: OP,
                    key: key_base64(&p.public_key),
                });
            }
        }
        let current = self.peers().await?;
        let entries = diff(&current, peers);
        for chunk in pack(entries, MESSAGE_BUDGET) {
            let attributes = vec![
                WireguardAttribute::IfIndex(self.index),
                WireguardAttribute::Peers(chunk),
            ];
            self.send_set(OP, attributes).await?;
        }
        self.peers = wanted;
        Ok(())
    }

    /// Points one peer at another endpoint (endpoint selection lives in the
    /// controller).
    pub async fn set_endpoint(
        &mut self,
        public_key: &[u8; 32],
        endpoint: SocketAddr,
    ) -> Result<(), KernelError> {
        const OP: &str = "setting a peer's endpoint";
        if !self.peers.contains(public_key) {
            return Err(KernelError::UnknownPeer {
                link: self.name.clone(),
                op: OP,
                key: key_base64(public_key),
            });
        }
        let peer = WireguardPeer(vec![
            WireguardPeerAttribute::PublicKey(*public_key),
            // Never creates a peer (that one would have no allowed IPs).
            WireguardPeerAttribute::Flags(WireguardPeerFlags::UpdateOnly),
            WireguardPeerAttribute::Endpoint(endpoint),
        ]);
        let attributes = vec![
            WireguardAttribute::IfIndex(self.index),
            WireguardAttribute::Peers(vec![peer]),
        ];
        self.send_set(OP, attributes).await
    }

    /// Counters in the userspace device's types.
    pub async fn status(&self) -> Result<DeviceStatus, KernelError> {
        Ok(DeviceStatus {
            peers: self.peers().await?.into_iter().map(Into::into).collect(),
            // The kernel counts none of these (its drops are in the
            // link's statistics, its offloads its own).
            ..DeviceStatus::default()
        })
    }

    /// The peers as the kernel holds them, with their configuration.
    pub async fn peers(&self) -> Result<Vec<KernelPeer>, KernelError> {
        const OP: &str = "reading the device";
        let msg = message(
            WireguardCmd::GetDevice,
            vec![WireguardAttribute::IfIndex(self.index)],
        );
        let mut answers = request(&self.genl, msg, self.family, NLM_F_REQUEST | NLM_F_DUMP)
            .map_err(|e| self.genl_error(OP, e))?;
        let mut reader = DumpReader::default();
        while let Some(answer) = answers.next().await {
            let answer = answer.map_err(|source| KernelError::Decode {
                link: self.name.clone(),
                op: OP,
                source,
            })?;
            match answer.payload {
                NetlinkPayload::InnerMessage(m) => {
                    reader
                        .add(&m.payload.attributes)
                        .map_err(|what| KernelError::Unexpected {
                            link: self.name.clone(),
                            op: OP,
                            what,
                        })?
                }
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(self.kernel_error(OP, &e));
                }
                _ => {}
            }
        }
        Ok(reader.peers)
    }

    /// Deletes the link.
    pub async fn delete(self, handle: &Handle) -> Result<(), KernelError> {
        handle
            .link()
            .del(self.index)
            .execute()
            .await
            .map_err(|source| KernelError::Link {
                link: self.name.clone(),
                op: "deleting the link",
                source,
            })
    }

    /// One `WG_CMD_SET_DEVICE`, acknowledged.
    async fn send_set(
        &mut self,
        op: &'static str,
        attributes: Vec<WireguardAttribute>,
    ) -> Result<(), KernelError> {
        let msg = message(WireguardCmd::SetDevice, attributes);
        let mut answers = request(&self.genl, msg, self.family, NLM_F_REQUEST | NLM_F_ACK)
            .map_err(|e| self.genl_error(op, e))?;
        while let Some(answer) = answers
            .try_next()
            .await
            .map_err(|source| KernelError::Decode {
                link: self.name.clone(),
                op,
                source,
            })?
        {
            if let NetlinkPayload::Error(e) = answer.payload
                && e.code.is_some()
            {
                return Err(self.kernel_error(op, &e));
            }
        }
        Ok(())
    }

    fn genl_error(&self, op: &'static str, source: NetlinkProtoError) -> KernelError {
        KernelError::Genetlink {
            link: self.name.clone(),
            op,
            source,
        }
    }

    fn kernel_error(&self, op: &'static str, e: &ErrorMessage) -> KernelError {
        KernelError::Kernel {
            link: self.name.clone(),
            op,
            source: e.to_io(),
        }
    }
}

/// A wireguard generic netlink message with its header filled in.
/// (`finalize`: without it the command and version bytes stay zero.)
fn message(
    cmd: WireguardCmd,
    attributes: Vec<WireguardAttribute>,
) -> GenlMessage<WireguardMessage> {
    let mut genl = GenlMessage::from_payload(WireguardMessage { cmd, attributes });
    genl.finalize();
    genl
}

/// What a failed lookup of family `wireguard` means here.
fn family_error(link: &str, e: FamilyError) -> KernelError {
    const OP: &str = "looking up the generic netlink family wireguard";
    let link = link.to_owned();
    match e {
        FamilyError::Missing => KernelError::Unsupported {
            link,
            reason: "no generic netlink family wireguard".into(),
        },
        FamilyError::Send(source) => KernelError::Genetlink {
            link,
            op: OP,
            source,
        },
        FamilyError::Decode(source) => KernelError::Decode {
            link,
            op: OP,
            source,
        },
        FamilyError::Kernel(source) => KernelError::Kernel {
            link,
            op: OP,
            source,
        },
        FamilyError::NoId => KernelError::Unexpected {
            link,
            op: OP,
            what: e.to_string(),
        },
    }
}

/// The index of link `name` if it exists and is wireguard; an error if it
/// is something else.
async fn find_link(handle: &Handle, name: &str) -> Result<Option<u32>, KernelError> {
    let found: Result<Vec<LinkMessage>, _> = handle
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_collect()
        .await;
    let msgs = match found {
        Ok(msgs) => msgs,
        Err(e) if slate_netlink::errno(&e) == Some(ENODEV) => return Ok(None),
        Err(source) => {
            return Err(KernelError::Link {
                link: name.to_owned(),
                op: "looking up the link",
                source,
            });
        }
    };
    let Some(msg) = msgs.first() else {
        return Ok(None);
    };
    let kind = msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k.clone()),
            _ => None,
        }),
        _ => None,
    });
    match kind {
        Some(InfoKind::Wireguard) => Ok(Some(msg.header.index)),
        other => Err(KernelError::NotWireguard {
            link: name.to_owned(),
            kind: other.map_or_else(|| "plain".to_owned(), |k| k.to_string()),
        }),
    }
}

fn key_base64(key: &[u8; 32]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// The peer entries that turn `current` into `wanted`: removals, then
/// additions and updates. Unchanged peers are sent too (cheap, and it
/// repairs a kernel state changed behind our back).
fn diff(current: &[KernelPeer], wanted: &[PeerConfig]) -> Vec<WireguardPeer> {
    let wanted_keys: HashSet<[u8; 32]> = wanted.iter().map(|p| p.public_key).collect();
    let mut entries: Vec<WireguardPeer> = current
        .iter()
        .filter(|p| !wanted_keys.contains(&p.public_key))
        .map(|p| {
            WireguardPeer(vec![
                WireguardPeerAttribute::PublicKey(p.public_key),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe),
            ])
        })
        .collect();
    for p in wanted {
        let now = current
            .iter()
            .find(|c| c.public_key == p.public_key)
            .and_then(|c| c.endpoint);
        // A peer the kernel already reaches somewhere keeps it: that may
        // be its NAT mapping, which no candidate names, or the path the
        // controller chose; the controller moves peers that stop answering.
        let endpoint = match now {
            Some(_) => None,
            None => p.endpoints.first().copied(),
        };
        entries.extend(peer_entries(p, endpoint, MESSAGE_BUDGET));
    }
    entries
}

/// One peer's entries: the first with everything and
/// `WGPEER_F_REPLACE_ALLOWEDIPS`, then (for a long allowed-IP list) more
/// entries of the same key that append the rest, each within `budget`.
fn peer_entries(p: &PeerConfig, endpoint: Option<SocketAddr>, budget: usize) -> Vec<WireguardPeer> {
    let mut head = vec![
        WireguardPeerAttribute::PublicKey(p.public_key),
        WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps),
        // 0 turns a previous keepalive off.
        WireguardPeerAttribute::PersistentKeepalive(p.persistent_keepalive.unwrap_or(0)),
    ];
    if let Some(e) = endpoint {
        head.push(WireguardPeerAttribute::Endpoint(e));
    }
    // Sizes as encoded: an entry is a nested attribute of its attributes,
    // the allowed IPs one more nested attribute.
    const NLA_HEADER: usize = 4;
    let size_of = |attrs: &[WireguardPeerAttribute]| -> usize {
        NLA_HEADER + attrs.iter().map(|a| a.buffer_len()).sum::<usize>() + NLA_HEADER
    };
    let mut entries = Vec::new();
    let mut attrs = head;
    let mut size = size_of(&attrs);
    let mut ips: Vec<WireguardAllowedIp> = Vec::new();
    for net in &p.allowed_ips {
        let ip = allowed_ip(net);
        let len = ip.buffer_len();
        // An entry holds at least one allowed IP, whatever the budget.
        if size + len > budget && !ips.is_empty() {
            attrs.push(WireguardPeerAttribute::AllowedIps(std::mem::take(&mut ips)));
            entries.push(WireguardPeer(attrs));
            attrs = vec![WireguardPeerAttribute::PublicKey(p.public_key)];
            size = size_of(&attrs);
        }
        size += len;
        ips.push(ip);
    }
    if !ips.is_empty() {
        attrs.push(WireguardPeerAttribute::AllowedIps(ips));
    }
    entries.push(WireguardPeer(attrs));
    entries
}

fn allowed_ip(net: &IpNet) -> WireguardAllowedIp {
    let family = match net {
        IpNet::V4(_) => WireguardAddressFamily::Ipv4,
        IpNet::V6(_) => WireguardAddressFamily::Ipv6,
    };
    WireguardAllowedIp(vec![
        WireguardAllowedIpAttr::Family(family),
        // The network, not the host bits: the kernel masks anyway, and the
        // read-back then equals what was asked.
        WireguardAllowedIpAttr::IpAddr(net.trunc().addr()),
        WireguardAllowedIpAttr::Cidr(net.prefix_len()),
    ])
}

/// Groups entries into peer lists of at most `budget` bytes encoded (an
/// entry larger than that alone goes in a list of its own), in order.
fn pack(entries: Vec<WireguardPeer>, budget: usize) -> Vec<Vec<WireguardPeer>> {
    let mut lists = Vec::new();
    let mut list = Vec::new();
    let mut size = 0;
    for entry in entries {
        let len = entry.buffer_len();
        if size + len > budget && !list.is_empty() {
            lists.push(std::mem::take(&mut list));
            size = 0;
        }
        size += len;
        list.push(entry);
    }
    if !list.is_empty() {
        lists.push(list);
    }
    lists
}

/// Peers from a `WG_CMD_GET_DEVICE` dump. The kernel continues a peer
/// with many allowed IPs in the next message as an entry with only its
/// key and more allowed IPs: those merge into the previous peer.
#[derive(Default)]
struct DumpReader {
    peers: Vec<KernelPeer>,
    allowed_ips: usize,
}

impl DumpReader {
    fn add(&mut self, attributes: &[WireguardAttribute]) -> Result<(), String> {
        for attr in attributes {
            let WireguardAttribute::Peers(peers) = attr else {
                continue;
            };
            for peer in peers {
                self.add_peer(peer)?;
            }
        }
        Ok(())
    }

    fn add_peer(&mut self, peer: &WireguardPeer) -> Result<(), String> {
        let Some(key) = peer.iter().find_map(|a| match a {
            WireguardPeerAttribute::PublicKey(k) => Some(*k),
            _ => None,
        }) else {
            return Err("a peer without a public key".into());
        };
        let continued = self.peers.last().is_some_and(|p| p.public_key == key);
        if !continued {
            if self.peers.len() >= MAX_PEERS {
                return Err(format!("more than {MAX_PEERS} peers"));
            }
            self.peers.push(KernelPeer {
                public_key: key,
                endpoint: None,
                allowed_ips: Vec::new(),
                persistent_keepalive: None,
                tx_bytes: 0,
                rx_bytes: 0,
                last_handshake: None,
            });
        }
        let Some(target) = self.peers.last_mut() else {
            return Err("no peer to add to".into());
        };
        for attr in peer.iter() {
            match attr {
                WireguardPeerAttribute::Endpoint(e) => target.endpoint = Some(*e),
                WireguardPeerAttribute::PersistentKeepalive(k) => {
                    target.persistent_keepalive = (*k != 0).then_some(*k)
                }
                WireguardPeerAttribute::TxBytes(n) => target.tx_bytes = *n,
                WireguardPeerAttribute::RxBytes(n) => target.rx_bytes = *n,
                WireguardPeerAttribute::LastHandshake(t) => target.last_handshake = handshake(t),
                WireguardPeerAttribute::AllowedIps(ips) => {
                    for ip in ips {
                        if self.allowed_ips >= MAX_ALLOWED_IPS {
                            return Err(format!("more than {MAX_ALLOWED_IPS} allowed IPs"));
                        }
                        match ip_net(ip) {
                            Some(net) => {
                                self.allowed_ips += 1;
                                target.allowed_ips.push(net);
                            }
                            None => tracing::warn!(
                                "peer {}: skipping an unreadable allowed IP {ip:?}",
                                key_base64(&key)
                            ),
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn ip_net(ip: &WireguardAllowedIp) -> Option<IpNet> {
    let mut addr = None;
    let mut cidr = None;
    for attr in ip.iter() {
        match attr {
            WireguardAllowedIpAttr::IpAddr(a) => addr = Some(*a),
            WireguardAllowedIpAttr::Cidr(c) => cidr = Some(*c),
            _ => {}
        }
    }
    IpNet::new(addr?, cidr?).ok()
}

/// `None` for never (the kernel sends zero) or a time that is not one.
fn handshake(t: &WireguardTimeSpec) -> Option<SystemTime> {
    if t.seconds == 0 && t.nano_seconds == 0 {
        return None;
    }
    let secs = u64::try_from(t.seconds).ok()?;
    let nanos = u32::try_from(t.nano_seconds)
        .ok()
        .filter(|n| *n < 1_000_000_000)?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests;
