//! Policy routing for the mesh: peers' node IPs and pod networks go into
//! the mesh interface, the mesh's own UDP does not.
//!
//! The mesh's UDP datagrams go to peers' node IPs, which are exactly the
//! destinations routed into the mesh: with plain routes in the main table
//! they would loop back into the TUN. So the routes live in a table of
//! their own ([`TABLE`]), reached by one rule per family,
//!
//! ```text
//! RULE_PRIORITY: not fwmark MARK/MASK lookup TABLE
//! ```
//!
//! and the mesh socket carries [`MARK`] ([`mark_socket`]), so its packets
//! skip the table and take the main one (the underlay). A destination
//! with no route in [`TABLE`] falls through to the next rule as usual.
//!
//! # Choice of mark, table and priority
//! What the neighbours on a Kubernetes node use (from their sources):
//! - kube-proxy: bits 0x4000 (masquerade) and 0x8000 (drop).
//! - Calico: its mark bits come from `IptablesMarkMask`, 0xffff0000 by
//!   default (0xff000000 in older releases; BPF mode within 0x1ff00000);
//!   route tables 1–250; WireGuard rule priority 99.
//! - Cilium: 0x0f00 (magic), 0x1000 (with 0x0e00: WireGuard-encrypted),
//!   0x4000/0x8000 (Kubernetes), the identity in 0xffff00ff, 0x80 (ENI
//!   NodePort); tables 10+, 200–202, 300+, 2004/2005; rule priorities
//!   1–112, with the kernel's `local` rule moved from 0 to 100.
//! - Talos KubeSpan: marks 0x20 and 0x40 (mask 0x60), table 180.
//! - Tailscale: 0xff0000 mark mask, table 52, priorities 5210–5270;
//!   wg-quick: mark and table 51820 (0xca6c), rules at 32764/32765.
//!
//! Bit 0x2000 is the one bit of the low 16 that none of them touches, and
//! the upper 16 are Calico's and Cilium's. One bit and a one-bit mask: a
//! rule matching the whole mark would stop matching our packets as soon
//! as anyone set another bit on them (Calico and kube-proxy OR bits in
//! on the way), and they would loop into the mesh.
//!
//! The table number is above 255 (Calico's and Cilium's small numbers, and
//! the kernel's 253–255) and away from 2004/2005 and wg-quick's 51820+:
//! 0x534c, "SL".
//!
//! The priority comes after `local` (0, or 100 under Cilium) and after
//! the CNIs' and Tailscale's own rules, which decide about traffic they
//! mark themselves; and before wg-quick's rules and `main` (32766), which
//! would otherwise send peers' networks to the underlay or to another
//! tunnel's default route.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;

use futures::TryStreamExt as _;
use ipnet::IpNet;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::route::{RouteAttribute, RouteMessage, RouteProtocol, RouteScope};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage};
use rtnetlink::{Handle, IpVersion, RouteMessageBuilder};

use slate_netlink::state::PROTO_SLATE;

/// The mark the mesh's own UDP socket carries (`SO_MARK`).
pub const MARK: u32 = 0x2000;
/// The mark bits the rule looks at: only ours.
pub const MASK: u32 = 0x2000;
/// The routing table of the peers' networks.
pub const TABLE: u32 = 0x534c;
/// The rule's priority: after `local`, before `main`.
pub const RULE_PRIORITY: u32 = 32000;

// A change of the numbers above must not walk into a neighbour's bits
// (kube-proxy, Cilium's magic, identity and ENI bits, Calico's default
// mask, KubeSpan) or the kernel's tables, nor leave `local`..`main`.
const _: () = {
    let taken: u32 = 0x4000 | 0x8000 | 0x1f00 | 0xffff_00ff | 0x60;
    assert!(MASK & taken == 0 && MARK & MASK == MARK && MARK != 0);
    assert!(TABLE > 255 && RULE_PRIORITY > 100 && RULE_PRIORITY < 32764);
};

/// Sets `SO_MARK` on a socket: its packets then skip [`TABLE`].
pub fn mark_socket<S: AsFd>(socket: &S, mark: u32) -> std::io::Result<()> {
    nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::Mark, &mark)?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("reading the {family} {what} from the kernel")]
    Dump {
        family: Family,
        what: &'static str,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("adding the {family} rule `not fwmark {MARK:#x}/{MASK:#x} lookup {TABLE}`")]
    AddRule {
        family: Family,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("deleting the {family} rule {rule}")]
    DelRule {
        family: Family,
        rule: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("adding the route to {net} via link {link_index} in table {TABLE}")]
    AddRoute {
        net: IpNet,
        link_index: u32,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("deleting the route to {net} from table {TABLE}")]
    DelRoute {
        net: IpNet,
        #[source]
        source: rtnetlink::Error,
    },
}

/// An address family, for messages and dumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    const BOTH: [Family; 2] = [Family::V4, Family::V6];

    fn ip_version(self) -> IpVersion {
        match self {
            Family::V4 => IpVersion::V4,
            Family::V6 => IpVersion::V6,
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// The mesh's rules and its table's routes, as installed.
#[derive(Debug)]
pub struct PolicyRouting {
    handle: Handle,
    link_index: u32,
    networks: BTreeSet<IpNet>,
}

impl PolicyRouting {
    /// Installs the rule of each family. A previous run's identical rule
    /// is kept; other rules into [`TABLE`] (duplicates, an older mark or
    /// priority) are removed, so there is exactly one per family after.
    pub async fn new(handle: Handle, link_index: u32) -> Result<Self, RoutingError> {
        for family in Family::BOTH {
            ensure_rule(&handle, family).await?;
        }
        Ok(PolicyRouting {
            handle,
            link_index,
            networks: BTreeSet::new(),
        })
    }

    /// The networks routed into the mesh, as last set.
    pub fn networks(&self) -> &BTreeSet<IpNet> {
        &self.networks
    }

    /// Makes [`TABLE`] hold exactly `nets` (truncated to their prefix),
    /// each through the mesh link: adds what is missing, removes the rest.
    /// Reads the kernel's table rather than trusting our memory, so routes
    /// left by a previous run or removed by someone else are put right.
    pub async fn set_networks(&mut self, nets: &[IpNet]) -> Result<(), RoutingError> {
        let wanted: BTreeSet<IpNet> = nets.iter().map(IpNet::trunc).collect();
        let actual = table_routes(&self.handle).await?;
        for route in &actual {
            if !wanted.contains(&route.net) || route.oif != Some(self.link_index) {
                delete_route(&self.handle, route).await?;
            }
        }
        for net in &wanted {
            let present = actual
                .iter()
                .any(|r| r.net == *net && r.oif == Some(self.link_index));
            if !present {
                add_route(&self.handle, *net, self.link_index).await?;
                tracing::debug!("mesh route {net} added");
            }
        }
        self.networks = wanted;
        Ok(())
    }

    /// Removes the rules and every route of [`TABLE`] (the mesh is off).
    pub async fn remove(self) -> Result<(), RoutingError> {
        clear(&self.handle).await
    }
}

/// Removes the rules and every route of [`TABLE`]: what [`PolicyRouting`]
/// left, also when its owner was stopped without [`PolicyRouting::remove`].
pub async fn clear(handle: &Handle) -> Result<(), RoutingError> {
    for family in Family::BOTH {
        for rule in table_rules(handle, family).await? {
            delete_rule(handle, family, rule).await?;
        }
    }
    for route in table_routes(handle).await? {
        delete_route(handle, &route).await?;
    }
    Ok(())
}

/// Leaves exactly one rule of ours for `family`.
async fn ensure_rule(handle: &Handle, family: Family) -> Result<(), RoutingError> {
    let mut kept = false;
    for rule in table_rules(handle, family).await? {
        if !kept && is_our_rule(&rule) {
            kept = true;
        } else {
            delete_rule(handle, family, rule).await?;
        }
    }
    if !kept {
        add_rule(handle, family).await?;
        tracing::info!(
            "{family} rule {RULE_PRIORITY}: not fwmark {MARK:#x}/{MASK:#x} lookup {TABLE}"
        );
    }
    Ok(())
}

/// The rules of `family` that look up [`TABLE`]: ours, from this run or
/// an earlier one.
async fn table_rules(handle: &Handle, family: Family) -> Result<Vec<RuleMessage>, RoutingError> {
    handle
        .rule()
        .get(family.ip_version())
        .execute()
        .try_filter(|r| std::future::ready(rule_table(r) == TABLE))
        .try_collect()
        .await
        .map_err(|source| RoutingError::Dump {
            family,
            what: "rules",
            source,
        })
}

/// The kernel puts tables above 255 in an attribute.
fn rule_table(rule: &RuleMessage) -> u32 {
    rule.attributes
        .iter()
        .find_map(|a| match a {
            RuleAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(rule.header.table))
}

/// Whether a rule into [`TABLE`] is exactly the one [`add_rule`] makes.
fn is_our_rule(rule: &RuleMessage) -> bool {
    let (mut priority, mut mark, mut mask) = (None, None, None);
    for attr in &rule.attributes {
        match attr {
            RuleAttribute::Priority(p) => priority = Some(*p),
            RuleAttribute::FwMark(m) => mark = Some(*m),
            RuleAttribute::FwMask(m) => mask = Some(*m),
            _ => {}
        }
    }
    rule.header.action == RuleAction::ToTable
        && rule.header.flags.contains(RuleFlags::Invert)
        && priority == Some(RULE_PRIORITY)
        && mark == Some(MARK)
        && mask == Some(MASK)
        && rule.header.src_len == 0
        && rule.header.dst_len == 0
        && rule.attributes.iter().all(|a| {
            // Anything that narrows the match makes it another rule.
            !matches!(
                a,
                RuleAttribute::Iifname(_)
                    | RuleAttribute::Oifname(_)
                    | RuleAttribute::Source(_)
                    | RuleAttribute::Destination(_)
                    | RuleAttribute::UidRange(_)
                    | RuleAttribute::IpProtocol(_)
                    | RuleAttribute::SourcePortRange(_)
                    | RuleAttribute::DestinationPortRange(_)
            )
        })
}

async fn add_rule(handle: &Handle, family: Family) -> Result<(), RoutingError> {
    let mut req = handle
        .rule()
        .add()
        .table_id(TABLE)
        .priority(RULE_PRIORITY)
        .fw_mark(MARK);
    let msg = req.message_mut();
    msg.header.action = RuleAction::ToTable;
    // `not fwmark`: the rule applies to every packet without our mark.
    msg.header.flags = RuleFlags::Invert;
    // The table is in the attribute; the header's field says "see there"
    // (the builder leaves `main` in it).
    msg.header.table = 0;
    msg.attributes.push(RuleAttribute::FwMask(MASK));
    // `ip rule` shows `proto 115`, networkd's routes' protocol.
    msg.attributes
        .push(RuleAttribute::Protocol(RouteProtocol::from(PROTO_SLATE)));
    match family {
        Family::V4 => req.v4().execute().await,
        Family::V6 => req.v6().execute().await,
    }
    .map_err(|source| RoutingError::AddRule { family, source })
}

async fn delete_rule(
    handle: &Handle,
    family: Family,
    rule: RuleMessage,
) -> Result<(), RoutingError> {
    let shown = describe_rule(&rule);
    match handle.rule().del(rule).execute().await {
        Ok(()) => {
            tracing::info!("{family} rule {shown} removed");
            Ok(())
        }
        // Someone else removed it meanwhile: done.
        Err(e) if slate_netlink::errno(&e) == Some(libc::ENOENT) => Ok(()),
        Err(source) => Err(RoutingError::DelRule {
            family,
            rule: shown,
            source,
        }),
    }
}

/// A rule as `ip rule` would show the parts we care about.
fn describe_rule(rule: &RuleMessage) -> String {
    let mut priority = None;
    let (mut mark, mut mask) = (0, 0);
    for attr in &rule.attributes {
        match attr {
            RuleAttribute::Priority(p) => priority = Some(*p),
            RuleAttribute::FwMark(m) => mark = *m,
            RuleAttribute::FwMask(m) => mask = *m,
            _ => {}
        }
    }
    let not = if rule.header.flags.contains(RuleFlags::Invert) {
        "not "
    } else {
        ""
    };
    let priority = priority.map_or_else(|| "?".to_owned(), |p| p.to_string());
    format!(
        "{priority}: {not}fwmark {mark:#x}/{mask:#x} lookup {}",
        rule_table(rule)
    )
}

/// A route of [`TABLE`] as the kernel has it.
#[derive(Debug, Clone)]
struct TableRoute {
    net: IpNet,
    oif: Option<u32>,
    /// The kernel's own description, for removing it: a removal names
    /// protocol and scope, which must match, and a route someone else put
    /// here may have any.
    msg: RouteMessage,
}

/// Every route of [`TABLE`], both families. The kernel dumps all tables
/// (it filters only for strict-checking sockets); we keep ours.
async fn table_routes(handle: &Handle) -> Result<Vec<TableRoute>, RoutingError> {
    let mut out = Vec::new();
    for family in Family::BOTH {
        let template = match family {
            Family::V4 => RouteMessageBuilder::<Ipv4Addr>::new().build(),
            Family::V6 => RouteMessageBuilder::<Ipv6Addr>::new().build(),
        };
        let mut stream = handle.route().get(template).execute();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(|source| RoutingError::Dump {
                family,
                what: "routes",
                source,
            })?
        {
            if let Some(route) = parse_table_route(&msg) {
                out.push(route);
            }
        }
    }
    Ok(out)
}

fn parse_table_route(msg: &RouteMessage) -> Option<TableRoute> {
    let (mut table, mut dst, mut oif) = (u32::from(msg.header.table), None, None);
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(a) => dst = slate_netlink::state::ip_of(a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    if table != TABLE {
        return None;
    }
    let dst = dst.unwrap_or(match msg.header.address_family {
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    });
    Some(TableRoute {
        net: IpNet::new(dst, msg.header.destination_prefix_length).ok()?,
        oif,
        msg: msg.clone(),
    })
}

/// `net dev <link> scope link table TABLE proto 115`: no gateway, the TUN
/// takes IP packets as they are.
fn route_message(net: IpNet, link_index: u32) -> RouteMessage {
    let proto = RouteProtocol::from(PROTO_SLATE);
    match net {
        IpNet::V4(n) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(n.addr(), n.prefix_len())
            .table_id(TABLE)
            .protocol(proto)
            .scope(RouteScope::Link)
            .output_interface(link_index)
            .build(),
        IpNet::V6(n) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(n.addr(), n.prefix_len())
            .table_id(TABLE)
            .protocol(proto)
            .scope(RouteScope::Link)
            .output_interface(link_index)
            .build(),
    }
}

async fn add_route(handle: &Handle, net: IpNet, link_index: u32) -> Result<(), RoutingError> {
    // Replace: the table is ours, and a route to `net` through another
    // link (a previous mesh interface) is wrong anyway.
    handle
        .route()
        .add(route_message(net, link_index))
        .replace()
        .execute()
        .await
        .map_err(|source| RoutingError::AddRoute {
            net,
            link_index,
            source,
        })
}

async fn delete_route(handle: &Handle, route: &TableRoute) -> Result<(), RoutingError> {
    match handle.route().del(route.msg.clone()).execute().await {
        Ok(()) => {
            tracing::debug!("mesh route {} removed", route.net);
            Ok(())
        }
        // Gone with its link, or removed meanwhile: done.
        Err(e) if slate_netlink::errno(&e) == Some(libc::ESRCH) => Ok(()),
        Err(source) => Err(RoutingError::DelRoute {
            net: route.net,
            source,
        }),
    }
}

/// `cluster.mesh.routeFilter`: which peer networks are routed into the
/// mesh. Entries are `CIDR` (route what lies within) or `!CIDR` (never
/// route what lies within).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteFilter {
    include: Vec<IpNet>,
    exclude: Vec<IpNet>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("routeFilter[{index}] {entry:?}: not a CIDR or !CIDR")]
pub struct FilterError {
    pub index: usize,
    pub entry: String,
}

impl RouteFilter {
    /// Parses the config entries. Host bits are allowed and dropped
    /// (`10.1.2.3/16` is `10.1.0.0/16`), as Kubernetes does with CIDRs.
    pub fn parse(entries: &[String]) -> Result<RouteFilter, FilterError> {
        let mut filter = RouteFilter::default();
        for (index, entry) in entries.iter().enumerate() {
            let bad = || FilterError {
                index,
                entry: entry.clone(),
            };
            let text = entry.trim();
            let (negative, cidr) = match text.strip_prefix('!') {
                Some(rest) => (true, rest.trim_start()),
                None => (false, text),
            };
            let net = cidr.parse::<IpNet>().map_err(|_| bad())?.trunc();
            if negative {
                filter.exclude.push(net);
            } else {
                filter.include.push(net);
            }
        }
        Ok(filter)
    }

    /// Whether `net` is to be routed: it lies within some positive entry
    /// (or there are none) and within no negative one. A network that
    /// only overlaps a negative entry (contains it) is allowed: routing
    /// it whole or not at all is the caller's choice, and the filter
    /// never splits networks.
    pub fn allows(&self, net: &IpNet) -> bool {
        let within = |entry: &IpNet| entry.contains(net);
        (self.include.is_empty() || self.include.iter().any(within))
            && !self.exclude.iter().any(within)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn filter(entries: &[&str]) -> RouteFilter {
        let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        RouteFilter::parse(&entries).unwrap()
    }

    #[test]
    fn empty_filter_allows_all() {
        let f = filter(&[]);
        for n in ["10.244.1.0/24", "0.0.0.0/0", "fd00::/8", "192.0.2.7/32"] {
            assert!(f.allows(&net(n)), "{n}");
        }
    }

    #[test]
    fn positive_entries_select() {
        let f = filter(&["10.244.0.0/16", "fd00:5::/48"]);
        assert!(f.allows(&net("10.244.1.0/24")));
        assert!(f.allows(&net("10.244.0.0/16")));
        assert!(f.allows(&net("fd00:5:0:1::/64")));
        assert!(!f.allows(&net("10.5.0.7/32")));
        // Wider than the entry: not within it.
        assert!(!f.allows(&net("10.0.0.0/8")));
        // The other family.
        assert!(!f.allows(&net("fd00:6::/64")));
    }

    #[test]
    fn only_negative_entries_allow_the_rest() {
        let f = filter(&["!10.5.0.0/16"]);
        assert!(!f.allows(&net("10.5.0.7/32")));
        assert!(!f.allows(&net("10.5.0.0/16")));
        assert!(f.allows(&net("10.244.1.0/24")));
        assert!(f.allows(&net("fd00:5::/64")));
        // Contains the excluded network but does not lie within it.
        assert!(f.allows(&net("10.0.0.0/8")));
    }

    #[test]
    fn negative_wins_over_positive() {
        let f = filter(&["10.0.0.0/8", "!10.5.0.0/16", "fd00::/8", "! fd00:5::/48"]);
        assert!(f.allows(&net("10.244.1.0/24")));
        assert!(!f.allows(&net("10.5.3.0/24")));
        assert!(f.allows(&net("fd00:6::/64")));
        assert!(!f.allows(&net("fd00:5:0:1::/64")));
        assert!(!f.allows(&net("192.168.0.0/24")));
    }

    #[test]
    fn host_bits_are_dropped() {
        let f = filter(&["10.244.1.9/24"]);
        assert!(f.allows(&net("10.244.1.0/25")));
        assert!(!f.allows(&net("10.244.2.0/24")));
    }

    #[test]
    fn bad_entries_are_named() {
        let entries: Vec<String> = ["10.0.0.0/8", "!fd00::/8", "10.0.0.0/33"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            RouteFilter::parse(&entries),
            Err(FilterError {
                index: 2,
                entry: "10.0.0.0/33".into()
            })
        );
        for bad in ["", "!", "10.0.0.1", "!!10.0.0.0/8", "pods", "10.0.0.0/8,"] {
            let err = RouteFilter::parse(&[bad.to_string()]).unwrap_err();
            assert_eq!(err.index, 0);
            assert_eq!(err.entry, bad);
            assert!(err.to_string().contains("routeFilter[0]"), "{err}");
        }
    }

    #[test]
    fn rule_table_reads_the_attribute() {
        let mut rule = RuleMessage::default();
        rule.header.table = 252; // RT_TABLE_COMPAT: the kernel's "see attribute"
        rule.attributes.push(RuleAttribute::Table(TABLE));
        assert_eq!(rule_table(&rule), TABLE);
        rule.attributes.clear();
        rule.header.table = 254;
        assert_eq!(rule_table(&rule), 254);
    }

    #[test]
    fn our_rule_is_recognised_and_variants_are_not() {
        let ours = || {
            let mut r = RuleMessage::default();
            r.header.action = RuleAction::ToTable;
            r.header.flags = RuleFlags::Invert;
            r.attributes = vec![
                RuleAttribute::Table(TABLE),
                RuleAttribute::Priority(RULE_PRIORITY),
                RuleAttribute::FwMark(MARK),
                RuleAttribute::FwMask(MASK),
            ];
            r
        };
        assert!(is_our_rule(&ours()));
        let mut not_inverted = ours();
        not_inverted.header.flags = RuleFlags::empty();
        assert!(!is_our_rule(&not_inverted));
        let mut other_mark = ours();
        other_mark.attributes[2] = RuleAttribute::FwMark(0x20);
        assert!(!is_our_rule(&other_mark));
        let mut narrowed = ours();
        narrowed
            .attributes
            .push(RuleAttribute::Iifname("eth0".into()));
        assert!(!is_our_rule(&narrowed));
    }
}
