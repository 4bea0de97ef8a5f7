//! What the machine config says about the node's name and name resolution.
//! It wins over DHCP: the DHCP path ([`crate::apply`]) consults it before
//! writing the hostname or resolv.conf, and the reconciler applies it when
//! the config changes.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use slate_machinery::config::Network;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub hostname: Option<String>,
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
}

pub type SharedOverrides = Arc<Mutex<Overrides>>;

impl Overrides {
    pub fn from_network(network: &Network) -> Self {
        Self {
            hostname: network.hostname.clone(),
            nameservers: network
                .nameservers
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect(),
            search: network.search_domains.clone(),
        }
    }

    /// Whether the config decides resolv.conf: when it names nameservers.
    /// Search domains alone are combined with DHCP's servers instead.
    pub fn owns_resolv(&self) -> bool {
        !self.nameservers.is_empty()
    }

    pub fn search_refs(&self) -> Vec<&str> {
        self.search.iter().map(String::as_str).collect()
    }
}
