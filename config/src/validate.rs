//! Semantic checks of a parsed config. Every problem is collected, not just
//! the first, each with the path of the field it is about; positions are
//! added by the caller from the YAML source (see [`crate::yaml::PathIndex`]).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use base64::Engine as _;
use ipnet::IpNet;
use slate_common::hostport::HostPort;

use super::schema::*;
use super::{CONFIG_VERSION, Mode};

/// One thing wrong with a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where, as a path: `machine.network.interfaces[0].addresses[1]`.
    pub path: String,
    /// What is wrong, naming the bad value.
    pub message: String,
    /// 1-based position in the source; 0 when unknown (JSON, defaults).
    pub line: u64,
    pub column: u64,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)?;
        if self.line > 0 {
            write!(f, " (line {}, col {})", self.line, self.column)?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
            line: 0,
            column: 0,
        });
    }
}

pub(super) fn validate(c: &MachineConfig, mode: Mode) -> Vec<Problem> {
    let mut p = Problems::default();
    if c.version != CONFIG_VERSION {
        p.add(
            "version",
            format!(
                "{:?} is not supported (expected {CONFIG_VERSION})",
                c.version
            ),
        );
    }
    machine(&c.machine, mode, &mut p);
    cluster(&c.cluster, c.machine.kind, &mut p);
    p.0
}

fn machine(m: &Machine, mode: Mode, p: &mut Problems) {
    if !is_token(&m.token) {
        p.add(
            "machine.token",
            "must look like [a-z0-9]{6}.[a-z0-9]{16} (a Kubernetes bootstrap token)",
        );
    }
    // Control-plane nodes sign the API certificates (their own, and
    // through the trust service those of workers that hold no key).
    key_pair(
        "machine.ca",
        &m.ca,
        (m.kind == MachineType::Controlplane).then_some(
            "control-plane nodes sign the API certificates with it; workers may leave it out \
             and have a control-plane node sign theirs",
        ),
        p,
    );
    for (i, san) in m.cert_sans.iter().enumerate() {
        if san.parse::<IpAddr>().is_err() && !is_dns_name(san.strip_prefix("*.").unwrap_or(san)) {
            p.add(
                format!("machine.certSANs[{i}]"),
                format!("{san:?} is neither an IP address nor a DNS name"),
            );
        }
    }
    network(&m.network, p);
    for (i, server) in m.time.servers.iter().enumerate() {
        if server.parse::<IpAddr>().is_err() && !is_dns_name(server) {
            p.add(
                format!("machine.time.servers[{i}]"),
                format!("{server:?} is neither an IP address nor a host name"),
            );
        }
    }
    match (&m.install.disk, mode) {
        (Some(disk), _) if !disk.starts_with("/dev/") || disk.len() <= 5 => p.add(
            "machine.install.disk",
            format!("{disk:?} is not a device path like /dev/sda"),
        ),
        (None, Mode::Metal) => p.add(
            "machine.install.disk",
            "is required on bare metal (--mode metal): the disk Slate installs to",
        ),
        _ => {}
    }
    if let Some(image) = &m.kubelet.image
        && image.trim().is_empty()
    {
        p.add("machine.kubelet.image", "is empty");
    }
    extra_args("machine.kubelet.extraArgs", &m.kubelet.extra_args, p);
    if let Some(source) = &m.kubelet.source {
        if !(source.url.starts_with("https://") || source.url.starts_with("http://"))
            || source.url.contains(char::is_whitespace)
        {
            p.add(
                "machine.kubelet.source.url",
                format!("{:?} is not an http:// or https:// URL", source.url),
            );
        }
        if source.sha256.len() != 64 || !source.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            p.add(
                "machine.kubelet.source.sha256",
                format!("{:?} is not a SHA-256 (64 hex digits)", source.sha256),
            );
        }
    }
    for (i, subnet) in m.kubelet.node_ip.valid_subnets.iter().enumerate() {
        let cidr = subnet.strip_prefix('!').unwrap_or(subnet);
        if cidr.parse::<IpNet>().is_err() {
            p.add(
                format!("machine.kubelet.nodeIP.validSubnets[{i}]"),
                format!("{subnet:?} is not a CIDR (or !CIDR to exclude)"),
            );
        }
    }
}

fn network(n: &super::schema::Network, p: &mut Problems) {
    if let Some(h) = &n.hostname
        && !is_dns_name(h)
    {
        p.add(
            "machine.network.hostname",
            format!("{h:?} is not a valid host name (RFC 1123: a-z, 0-9, '-', dots)"),
        );
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    // Every static address on the node, to catch the same one twice.
    let mut seen: HashMap<IpAddr, String> = HashMap::new();
    for (i, iface) in n.interfaces.iter().enumerate() {
        interface(i, iface, &mut names, &mut seen, p);
    }
    route_conflicts(&n.interfaces, p);
    resolvers(n, p);
}

/// Checks one entry of `machine.network.interfaces`. `names` and `seen`
/// span all entries, so a link name or an address used twice is caught.
fn interface<'a>(
    i: usize,
    iface: &'a Interface,
    names: &mut HashMap<&'a str, usize>,
    seen: &mut HashMap<IpAddr, String>,
    p: &mut Problems,
) {
    let path = format!("machine.network.interfaces[{i}]");
    link_selection(&path, i, iface, names, p);
    let subnets = addresses(&path, &iface.addresses, seen, p);
    routes(&path, &iface.routes, &subnets, iface.dhcp, p);
    mtu(&path, iface.mtu, p);
    vlans(&path, &iface.vlans, seen, p);
    link_kind(&path, iface, p);
}

/// Checks that the entry names its link exactly one way, and that a
/// name is not claimed by two entries.
fn link_selection<'a>(
    path: &str,
    i: usize,
    iface: &'a Interface,
    names: &mut HashMap<&'a str, usize>,
    p: &mut Problems,
) {
    match (&iface.interface, &iface.device_selector) {
        (Some(_), Some(_)) => p.add(
            path,
            "has both interface and deviceSelector: name the link one way",
        ),
        (None, None) => p.add(
            path,
            "needs interface (a link name) or deviceSelector (hardware match)",
        ),
        (Some(name), None) => {
            if !is_link_name(name) {
                p.add(
                    format!("{path}.interface"),
                    format!(
                        "{name:?} is not a valid link name (1-15 characters, no '/', ':' or spaces)"
                    ),
                );
            } else if let Some(first) = names.insert(name, i) {
                p.add(
                    format!("{path}.interface"),
                    format!(
                        "{name:?} is already configured in machine.network.interfaces[{first}]"
                    ),
                );
            }
        }
        (None, Some(sel)) => selector(&format!("{path}.deviceSelector"), sel, p),
    }
}

/// Checks a link's VLANs like links of their own; an id may be used
/// once per parent link.
fn vlans(path: &str, list: &[Vlan], seen: &mut HashMap<IpAddr, String>, p: &mut Problems) {
    let mut vlan_ids = BTreeSet::new();
    for (j, vlan) in list.iter().enumerate() {
        let vpath = format!("{path}.vlans[{j}]");
        if !(1..=4094).contains(&vlan.vlan_id) {
            p.add(
                format!("{vpath}.vlanId"),
                format!("{} is not a VLAN id (1-4094)", vlan.vlan_id),
            );
        } else if !vlan_ids.insert(vlan.vlan_id) {
            p.add(
                format!("{vpath}.vlanId"),
                format!("VLAN {} is configured twice on this link", vlan.vlan_id),
            );
        }
        let subnets = addresses(&vpath, &vlan.addresses, seen, p);
        routes(&vpath, &vlan.routes, &subnets, vlan.dhcp, p);
        mtu(&vpath, vlan.mtu, p);
    }
}

/// Checks that a virtual link is of one kind at most, and that its bond
/// or bridge members are links other than itself.
fn link_kind(path: &str, iface: &Interface, p: &mut Problems) {
    let kinds = [iface.bond.is_some(), iface.bridge.is_some(), iface.dummy];
    if kinds.iter().filter(|k| **k).count() > 1 {
        p.add(path, "can be only one of bond, bridge and dummy");
    }
    let members = [
        ("bond", iface.bond.as_ref().map(|b| &b.interfaces)),
        ("bridge", iface.bridge.as_ref().map(|b| &b.interfaces)),
    ];
    for (kind, list) in members {
        let Some(list) = list else { continue };
        if list.is_empty() {
            p.add(
                format!("{path}.{kind}.interfaces"),
                "needs at least one member link",
            );
        }
        for (j, member) in list.iter().enumerate() {
            if !is_link_name(member) {
                p.add(
                    format!("{path}.{kind}.interfaces[{j}]"),
                    format!("{member:?} is not a valid link name"),
                );
            } else if iface.interface.as_deref() == Some(member) {
                p.add(
                    format!("{path}.{kind}.interfaces[{j}]"),
                    format!("{member:?} cannot be a member of itself"),
                );
            }
        }
    }
}

/// The kernel keeps one route per destination and metric: two would
/// fight over it.
fn route_conflicts(interfaces: &[Interface], p: &mut Problems) {
    let mut route_keys: HashMap<(IpNet, u32), String> = HashMap::new();
    for (i, iface) in interfaces.iter().enumerate() {
        let base = format!("machine.network.interfaces[{i}]");
        let lists = std::iter::once((base.clone(), &iface.routes)).chain(
            iface
                .vlans
                .iter()
                .enumerate()
                .map(|(j, v)| (format!("{base}.vlans[{j}]"), &v.routes)),
        );
        for (path, routes) in lists {
            for (k, r) in routes.iter().enumerate() {
                let Ok(net) = r.network.parse::<IpNet>() else {
                    continue;
                };
                let metric = r.metric.unwrap_or(1024);
                let here = format!("{path}.routes[{k}]");
                if let Some(first) = route_keys.get(&(net.trunc(), metric)) {
                    p.add(
                        format!("{here}.network"),
                        format!(
                            "{} with metric {metric} is already routed at {first}; give one a different metric",
                            net.trunc()
                        ),
                    );
                } else {
                    route_keys.insert((net.trunc(), metric), here);
                }
            }
        }
    }
}

/// Checks the nameservers and search domains.
fn resolvers(n: &super::schema::Network, p: &mut Problems) {
    for (i, ns) in n.nameservers.iter().enumerate() {
        if ns.parse::<IpAddr>().is_err() {
            p.add(
                format!("machine.network.nameservers[{i}]"),
                format!("{ns:?} is not an IP address"),
            );
        }
    }
    for (i, domain) in n.search_domains.iter().enumerate() {
        if !is_dns_name(domain) {
            p.add(
                format!("machine.network.searchDomains[{i}]"),
                format!("{domain:?} is not a DNS domain"),
            );
        }
    }
}

fn selector(path: &str, sel: &DeviceSelector, p: &mut Problems) {
    if sel == &DeviceSelector::default() {
        p.add(
            path,
            "matches every link: set hardwareAddr, driver or busPath",
        );
    }
    if let Some(mac) = &sel.hardware_addr
        && !is_mac(mac)
    {
        p.add(
            format!("{path}.hardwareAddr"),
            format!("{mac:?} is not a MAC address like aa:bb:cc:dd:ee:ff"),
        );
    }
}

/// Checks addresses and returns the subnets they make on-link.
fn addresses(
    path: &str,
    list: &[String],
    seen: &mut HashMap<IpAddr, String>,
    p: &mut Problems,
) -> Vec<IpNet> {
    let mut subnets = Vec::new();
    for (i, text) in list.iter().enumerate() {
        let here = format!("{path}.addresses[{i}]");
        match text.parse::<IpNet>() {
            Err(_) => p.add(
                &here,
                format!("{text:?} is not a CIDR (address/prefix, e.g. 10.0.0.5/24)"),
            ),
            Ok(net) => {
                if let Some(first) = seen.get(&net.addr()) {
                    p.add(
                        &here,
                        format!("{} is already assigned at {first}", net.addr()),
                    );
                } else {
                    seen.insert(net.addr(), here);
                }
                subnets.push(net.trunc());
            }
        }
    }
    subnets
}

fn routes(path: &str, list: &[Route], on_link: &[IpNet], dhcp: bool, p: &mut Problems) {
    for (i, route) in list.iter().enumerate() {
        let here = format!("{path}.routes[{i}]");
        let network = match route.network.parse::<IpNet>() {
            Ok(net) => {
                if net.trunc() != net {
                    p.add(
                        format!("{here}.network"),
                        format!(
                            "{:?} has host bits set (did you mean {}?)",
                            route.network,
                            net.trunc()
                        ),
                    );
                }
                Some(net)
            }
            Err(_) => {
                p.add(
                    format!("{here}.network"),
                    format!("{:?} is not a CIDR", route.network),
                );
                None
            }
        };
        let Some(gw_text) = &route.gateway else {
            continue;
        };
        let Ok(gw) = gw_text.parse::<IpAddr>() else {
            p.add(
                format!("{here}.gateway"),
                format!("{gw_text:?} is not an IP address"),
            );
            continue;
        };
        if let Some(net) = network
            && net.addr().is_ipv4() != gw.is_ipv4()
        {
            p.add(
                format!("{here}.gateway"),
                format!("{gw} is not of the same IP family as {net}"),
            );
            continue;
        }
        // With DHCP the link's subnet is known only at run time.
        if !dhcp && !on_link.iter().any(|net| net.contains(&gw)) {
            p.add(
                format!("{here}.gateway"),
                format!("{gw} is not reachable: it is in none of the link's subnets"),
            );
        }
    }
}

fn mtu(path: &str, mtu: Option<u32>, p: &mut Problems) {
    if let Some(mtu) = mtu
        && !(68..=65535).contains(&mtu)
    {
        p.add(
            format!("{path}.mtu"),
            format!("{mtu} is not an MTU (68-65535)"),
        );
    }
}

fn cluster(c: &Cluster, kind: MachineType, p: &mut Problems) {
    for (field, value) in [("cluster.id", &c.id), ("cluster.secret", &c.secret)] {
        if let Some(v) = value
            && base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .map_or(true, |b| b.len() != 32)
        {
            p.add(
                field,
                "must be 32 bytes in base64 (slatectl gen secrets makes one)",
            );
        }
    }
    if !is_label(&c.name) {
        p.add(
            "cluster.name",
            format!("{:?} must be 1-63 characters of a-z, 0-9 and '-'", c.name),
        );
    }
    if endpoint_host(&c.control_plane.endpoint).is_none() {
        p.add(
            "cluster.controlPlane.endpoint",
            format!(
                "{:?} is not an https://HOST:PORT URL",
                c.control_plane.endpoint
            ),
        );
    }
    cluster_keys(c, kind, p);
    kubernetes(c, p);
    extra_args("cluster.etcd.extraArgs", &c.etcd.extra_args, p);
    cluster_network(&c.network, p);
    mesh(c, p);
    if c.api_balancer.port == 0 {
        p.add("cluster.apiBalancer.port", "0 is not a port");
    }
}

/// Checks the cluster and etcd CAs. Only control-plane nodes sign with
/// them, so only they need the private keys.
fn cluster_keys(c: &Cluster, kind: MachineType, p: &mut Problems) {
    let needs_keys = kind == MachineType::Controlplane;
    let signer = needs_keys.then_some("control-plane nodes sign with it");
    key_pair("cluster.ca", &c.ca, signer, p);
    match &c.etcd.ca {
        Some(ca) => key_pair("cluster.etcd.ca", ca, signer, p),
        None if needs_keys => p.add(
            "cluster.etcd",
            "control-plane nodes need etcd.ca (slatectl gen config makes one)",
        ),
        None => {}
    }
}

/// Checks the Kubernetes components and add-ons: images, flags, volumes,
/// resources and the API server's extra names.
fn kubernetes(c: &Cluster, p: &mut Problems) {
    if let Some(ca) = &c.aggregator_ca {
        key_pair("cluster.aggregatorCA", ca, None, p);
    }
    if let Some(sa) = &c.service_account {
        match sa.key_pem() {
            Ok(pem) if pem.contains("PRIVATE KEY-----") => {}
            Ok(_) => p.add(
                "cluster.serviceAccount.key",
                "does not hold a PEM private key",
            ),
            Err(e) => p.add("cluster.serviceAccount.key", e.reason()),
        }
    }
    let api = c.api_server.component();
    for (path, comp) in [
        ("cluster.apiServer", &api),
        ("cluster.controllerManager", &c.controller_manager),
        ("cluster.scheduler", &c.scheduler),
    ] {
        image(&format!("{path}.image"), comp.image.as_deref(), p);
        extra_args(&format!("{path}.extraArgs"), &comp.extra_args, p);
        for (i, v) in comp.extra_volumes.iter().enumerate() {
            for (field, value) in [("hostPath", &v.host_path), ("mountPath", &v.mount_path)] {
                if !value.starts_with('/') || value.split('/').any(|part| part == "..") {
                    p.add(
                        format!("{path}.extraVolumes[{i}].{field}"),
                        format!("{value:?} is not an absolute path without '..'"),
                    );
                }
            }
        }
        for (kind, map) in [
            ("requests", &comp.resources.requests),
            ("limits", &comp.resources.limits),
        ] {
            for (name, quantity) in map {
                let here = format!("{path}.resources.{kind}.{name}");
                if !matches!(name.as_str(), "cpu" | "memory" | "ephemeral-storage") {
                    p.add(
                        &here,
                        format!("{name:?} is not cpu, memory or ephemeral-storage"),
                    );
                } else if !is_quantity(quantity) {
                    p.add(
                        &here,
                        format!("{quantity:?} is not a quantity like 250m or 512Mi"),
                    );
                }
            }
        }
    }
    for (i, san) in c.api_server.cert_sans.iter().enumerate() {
        if san.parse::<IpAddr>().is_err() && !is_dns_name(san.strip_prefix("*.").unwrap_or(san)) {
            p.add(
                format!("cluster.apiServer.certSANs[{i}]"),
                format!("{san:?} is neither an IP address nor a DNS name"),
            );
        }
    }
    image("cluster.proxy.image", c.proxy.image.as_deref(), p);
    image("cluster.coreDNS.image", c.core_dns.image.as_deref(), p);
}

/// An image reference: not empty, no whitespace or control characters.
fn image(path: &str, image: Option<&str>, p: &mut Problems) {
    if let Some(image) = image
        && (image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        p.add(path, format!("{image:?} is not an image reference"));
    }
}

/// A Kubernetes quantity as people write them: a decimal number with an
/// optional suffix (`m`, `k`, `M`, `G`, `T`, `Ki`, `Mi`, `Gi`, `Ti`).
fn is_quantity(q: &str) -> bool {
    let digits = q.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &q[digits.len()..];
    !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && digits.chars().filter(|c| *c == '.').count() <= 1
        && matches!(
            suffix,
            "" | "m" | "k" | "M" | "G" | "T" | "Ki" | "Mi" | "Gi" | "Ti"
        )
}

/// Checks the pod and service subnets, which must not overlap one
/// another, and the DNS domain.
fn cluster_network(n: &ClusterNetwork, p: &mut Problems) {
    let mut nets: Vec<(String, IpNet)> = Vec::new();
    for (field, list) in [
        ("podSubnets", &n.pod_subnets),
        ("serviceSubnets", &n.service_subnets),
    ] {
        if list.is_empty() {
            p.add(
                format!("cluster.network.{field}"),
                "needs at least one subnet",
            );
        }
        for (i, text) in list.iter().enumerate() {
            let here = format!("cluster.network.{field}[{i}]");
            match text.parse::<IpNet>() {
                Err(_) => p.add(&here, format!("{text:?} is not a CIDR")),
                Ok(net) if net.trunc() != net => p.add(
                    &here,
                    format!("{text:?} has host bits set (did you mean {}?)", net.trunc()),
                ),
                Ok(net) => {
                    if let Some((other, _)) = nets
                        .iter()
                        .find(|(_, o)| o.contains(&net) || net.contains(o))
                    {
                        p.add(&here, format!("{net} overlaps {other}"));
                    }
                    nets.push((here, net));
                }
            }
        }
    }
    if !is_dns_name(&n.dns_domain) {
        p.add(
            "cluster.network.dnsDomain",
            format!("{:?} is not a DNS domain", n.dns_domain),
        );
    }
}

/// Checks `cluster.mesh`. The mesh derives its addresses from the cluster
/// id and seals its discovery records with the secret: enabling it makes
/// both required.
fn mesh(c: &Cluster, p: &mut Problems) {
    if c.mesh.enabled {
        for (field, value) in [("cluster.id", &c.id), ("cluster.secret", &c.secret)] {
            if value.is_none() {
                p.add(field, "is required when cluster.mesh.enabled is true");
            }
        }
    }
    if let Some(url) = &c.mesh.discovery.endpoint
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        p.add(
            "cluster.mesh.discovery.endpoint",
            format!("{url:?} is not an http:// or https:// URL"),
        );
    }
    for (i, entry) in c.mesh.route_filter.iter().enumerate() {
        let net = entry.strip_prefix('!').unwrap_or(entry);
        if net.parse::<ipnet::IpNet>().is_err() {
            p.add(
                format!("cluster.mesh.routeFilter[{i}]"),
                format!("{entry:?} is not a CIDR or !CIDR"),
            );
        }
    }
}

/// Checks a certificate and key; `needs_key` says why the key is required.
fn key_pair(path: &str, pair: &PemKeyPair, needs_key: Option<&str>, p: &mut Problems) {
    match pair.crt_pem() {
        Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => {}
        Ok(_) => p.add(format!("{path}.crt"), "does not hold a PEM certificate"),
        Err(e) => p.add(format!("{path}.crt"), e.reason()),
    }
    match pair.key_pem() {
        Ok(Some(pem)) if pem.contains("PRIVATE KEY-----") => {}
        Ok(Some(_)) => p.add(format!("{path}.key"), "does not hold a PEM private key"),
        Ok(None) => {
            if let Some(why) = needs_key {
                p.add(format!("{path}.key"), format!("is required: {why}"));
            }
        }
        Err(e) => p.add(format!("{path}.key"), e.reason()),
    }
}

fn extra_args(path: &str, args: &std::collections::BTreeMap<String, String>, p: &mut Problems) {
    for name in args.keys() {
        if name.is_empty() || name.starts_with('-') || name.contains(['=', ' ']) {
            p.add(
                format!("{path}.{name}"),
                format!("{name:?} must be a flag name without leading dashes or '='"),
            );
        }
    }
}

/// The host of `https://HOST:PORT` (IPv6 in brackets, no path), if the
/// URL has that shape.
pub fn endpoint_host(url: &str) -> Option<String> {
    let authority = url.strip_prefix("https://")?.trim_end_matches('/');
    if authority.contains(['/', '?', '#']) {
        return None;
    }
    HostPort::from_https_url(url, None).ok().map(|t| t.host)
}

fn is_token(t: &str) -> bool {
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    t.split_once('.')
        .is_some_and(|(a, b)| ok(a, 6) && ok(b, 16))
}

/// An RFC 1123 label: 1-63 of a-z, 0-9 and '-', not starting or ending with '-'.
pub fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Labels joined by dots, at most 253 characters (case-insensitive).
/// A host name: dot-separated labels of a-z, 0-9 and `-`, at most 253
/// characters (no wildcard).
pub fn is_dns_name(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(|l| is_label(&l.to_ascii_lowercase()))
}

fn is_link_name(s: &str) -> bool {
    // IFNAMSIZ is 16 with the NUL.
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && !s.contains(['/', ':'])
        && !s.contains(char::is_whitespace)
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}
