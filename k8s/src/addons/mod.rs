//! What a control-plane node applies once the API answers: the objects a
//! cluster needs before nodes can join and pods can run.
//!
//! - [`bootstrap`]: the bootstrap-token Secret of `machine.token` and the
//!   RBAC that lets kubelets join with it and get their CSRs approved;
//! - [`kube_proxy`]: kube-proxy's DaemonSet (`cluster.proxy`);
//! - [`coredns`]: CoreDNS and the `kube-dns` Service at the 10th address of
//!   the service network (`cluster.coreDNS`);
//! - [`flannel`]: the default CNI (`cluster.network.cni`).
//!
//! Every object is a typed `k8s-openapi` value turned into a [`Manifest`].

use slate_config::{CniName, MachineConfig};

use crate::{K8sError, Manifest};

pub mod bootstrap;
mod build;
pub mod coredns;
pub mod flannel;
pub mod kube_proxy;
#[cfg(test)]
pub(crate) mod testing;

/// Every object to apply for `config`, in apply order (namespaces and
/// RBAC before the workloads that use them).
pub fn objects(config: &MachineConfig) -> Result<Vec<Manifest>, K8sError> {
    let mut out = bootstrap::objects(config)?;
    if !config.cluster.proxy.disabled {
        out.extend(kube_proxy::objects(config)?);
    }
    if !config.cluster.core_dns.disabled {
        out.extend(coredns::objects(config)?);
    }
    if config.cluster.network.cni.name == CniName::Flannel {
        out.extend(flannel::objects(config)?);
    }
    Ok(out)
}

/// The API URL pods on the host network use before cluster DNS exists:
/// the local API balancer when it is on, else the control-plane endpoint
/// (as kubelet's bootstrap kubeconfig).
pub fn api_url(config: &MachineConfig) -> String {
    if config.cluster.api_balancer.enabled {
        format!("https://127.0.0.1:{}", config.cluster.api_balancer.port)
    } else {
        config.cluster.control_plane.endpoint.clone()
    }
}

/// The cluster DNS Service's address: the 10th of the first service
/// network (kubelet's `clusterDNS` says the same).
pub fn dns_service_ip(config: &MachineConfig) -> Result<std::net::IpAddr, K8sError> {
    nth_service_ip(config, 10, "a DNS address")
}

/// The `kubernetes` Service's address: the first of the service network.
pub fn api_service_ip(config: &MachineConfig) -> Result<std::net::IpAddr, K8sError> {
    nth_service_ip(config, 1, "the API service address")
}

fn nth_service_ip(
    config: &MachineConfig,
    n: usize,
    what: &str,
) -> Result<std::net::IpAddr, K8sError> {
    let field = "cluster.network.serviceSubnets[0]";
    let subnet = config
        .cluster
        .network
        .service_subnets
        .first()
        .ok_or_else(|| K8sError::config("cluster.network.serviceSubnets", "is empty"))?;
    let net: ipnet::IpNet = subnet
        .parse()
        .map_err(|e| K8sError::config(field, format!("{subnet:?}: {e}")))?;
    // The network address plus n, as the API server counts: ipnet's
    // `hosts()` skips the network address for IPv4 but not for IPv6.
    let too_small = || K8sError::config(field, format!("{subnet} is too small for {what}"));
    let ip = match net {
        ipnet::IpNet::V4(v4) => {
            let n = u32::try_from(n).map_err(|_| too_small())?;
            std::net::IpAddr::from(std::net::Ipv4Addr::from(
                u32::from(v4.network())
                    .checked_add(n)
                    .ok_or_else(too_small)?,
            ))
        }
        ipnet::IpNet::V6(v6) => std::net::IpAddr::from(std::net::Ipv6Addr::from(
            u128::from(v6.network())
                .checked_add(n as u128)
                .ok_or_else(too_small)?,
        )),
    };
    if net.contains(&ip) && ip != net.broadcast() {
        Ok(ip)
    } else {
        Err(too_small())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_services(subnet: &str) -> MachineConfig {
        let mut c = testing::config();
        c.cluster.network.service_subnets = vec![subnet.into()];
        c
    }

    #[test]
    fn service_addresses_are_counted_from_the_network_address() {
        let c = with_services("10.96.0.0/12");
        assert_eq!(api_service_ip(&c).unwrap().to_string(), "10.96.0.1");
        assert_eq!(dns_service_ip(&c).unwrap().to_string(), "10.96.0.10");
        let c = with_services("fd00:10:96::/112");
        assert_eq!(api_service_ip(&c).unwrap().to_string(), "fd00:10:96::1");
        assert_eq!(dns_service_ip(&c).unwrap().to_string(), "fd00:10:96::a");
        let err = dns_service_ip(&with_services("10.0.0.0/29")).unwrap_err();
        assert!(err.to_string().contains("too small"), "{err}");
    }
}
