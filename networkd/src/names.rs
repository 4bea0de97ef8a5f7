//! The node's hostname and name servers, decided from every source at
//! once and applied in one place.
//!
//! Sources, strongest first: the machine config (`machine.network`), the
//! kernel's `ip=`, DHCP leases (one per link), and for the hostname a
//! stable `slate-` name derived from the first NIC's MAC. Each source sets
//! or clears its own part; after every change the winner is recomputed and
//! applied only if it differs from what was applied. So a hostname removed
//! from the config falls back to DHCP's at once, and a lost lease takes its
//! name servers out of resolv.conf.
//!
//! The result is published as the `hostname` and `resolvers` resources;
//! a change wakes the status watches through [`Names::subscribe`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use slate_config::Network;

use crate::hostname;

/// Where the winning value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NameSource {
    Config,
    Cmdline,
    Dhcp,
    Default,
    None,
}

/// What one source says; empty fields say nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contribution {
    pub hostname: Option<String>,
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
}

impl Contribution {
    /// The config's `hostname`, `nameservers` and `searchDomains`.
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
}

/// The `hostname` resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostnameStatus {
    pub hostname: Option<String>,
    pub source: NameSource,
}

/// The `resolvers` resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolverStatus {
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
    pub source: NameSource,
}

/// All sources, and what was last applied.
pub struct Names {
    config: Contribution,
    cmdline: Contribution,
    /// DHCP leases by link name (ordered, so the choice is stable).
    leases: BTreeMap<String, Contribution>,
    fallback: Option<String>,
    resolv_conf: PathBuf,
    /// Off in tests that share the host's UTS namespace.
    set_hostname: bool,
    applied_hostname: Option<String>,
    applied_resolv: Option<String>,
    changed: tokio::sync::watch::Sender<()>,
}

/// Shared by the DHCP clients, the reconciler and the status service.
#[derive(Clone)]
pub struct SharedNames(Arc<Mutex<Names>>);

impl Names {
    pub fn new(resolv_conf: PathBuf, set_hostname: bool) -> Self {
        Self {
            config: Contribution::default(),
            cmdline: Contribution::default(),
            leases: BTreeMap::new(),
            fallback: None,
            resolv_conf,
            set_hostname,
            applied_hostname: None,
            applied_resolv: None,
            changed: tokio::sync::watch::Sender::new(()),
        }
    }

    pub fn hostname(&self) -> HostnameStatus {
        let valid = |c: &Contribution| c.hostname.clone().filter(|h| hostname::is_valid(h));
        let (hostname, source) = if let Some(h) = valid(&self.config) {
            (Some(h), NameSource::Config)
        } else if let Some(h) = valid(&self.cmdline) {
            (Some(h), NameSource::Cmdline)
        } else if let Some(h) = self.leases.values().find_map(valid) {
            (Some(h), NameSource::Dhcp)
        } else if let Some(h) = self.fallback.clone() {
            (Some(h), NameSource::Default)
        } else {
            (None, NameSource::None)
        };
        HostnameStatus { hostname, source }
    }

    /// Name servers: the config's, else `ip=`'s, else every lease's (in
    /// link order, without repeats). Search domains: the config's, else
    /// the leases'. Search domains alone in the config combine with the
    /// servers of another source.
    pub fn resolvers(&self) -> ResolverStatus {
        let leases = || self.leases.values();
        let (nameservers, source) = if !self.config.nameservers.is_empty() {
            (self.config.nameservers.clone(), NameSource::Config)
        } else if !self.cmdline.nameservers.is_empty() {
            (self.cmdline.nameservers.clone(), NameSource::Cmdline)
        } else {
            let all = dedup(leases().flat_map(|c| c.nameservers.iter().cloned()));
            let source = if all.is_empty() {
                NameSource::None
            } else {
                NameSource::Dhcp
            };
            (all, source)
        };
        let search = if self.config.search.is_empty() {
            dedup(leases().flat_map(|c| c.search.iter().cloned()))
        } else {
            self.config.search.clone()
        };
        ResolverStatus {
            nameservers,
            search,
            source,
        }
    }

    /// Applies the winners where they changed; failures are logged and
    /// retried at the next change.
    fn apply(&mut self) {
        let mut changed = false;
        let host = self.hostname();
        if let Some(name) = host.hostname
            && self.applied_hostname.as_deref() != Some(name.as_str())
        {
            match hostname::set(&name, self.set_hostname) {
                Ok(()) => {
                    tracing::info!(
                        "hostname {name} ({})",
                        serde_json::to_string(&host.source).unwrap_or_default()
                    );
                    self.applied_hostname = Some(name);
                    changed = true;
                }
                Err(e) => tracing::warn!("{}", crate::error_chain(&e)),
            }
        }
        let resolvers = self.resolvers();
        // Nothing from anyone yet: leave the file alone rather than write
        // an empty one at every start.
        let anything = !resolvers.nameservers.is_empty() || !resolvers.search.is_empty();
        let search: Vec<&str> = resolvers.search.iter().map(String::as_str).collect();
        let text = crate::resolv::render(&resolvers.nameservers, &search);
        if (anything || self.applied_resolv.is_some())
            && self.applied_resolv.as_deref() != Some(text.as_str())
        {
            match crate::resolv::write_text(&self.resolv_conf, &text) {
                Ok(()) => {
                    self.applied_resolv = Some(text);
                    changed = true;
                }
                Err(e) => tracing::warn!("{}", crate::error_chain(&e)),
            }
        }
        if changed {
            self.changed.send_replace(());
        }
    }
}

fn dedup<T: PartialEq>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

impl SharedNames {
    pub fn new(resolv_conf: PathBuf, set_hostname: bool) -> Self {
        Self(Arc::new(Mutex::new(Names::new(resolv_conf, set_hostname))))
    }

    fn lock(&self) -> MutexGuard<'_, Names> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut Names)) {
        let mut names = self.lock();
        f(&mut names);
        names.apply();
    }

    /// The machine config's part (`None`: no config).
    pub fn set_config(&self, network: Option<&Network>) {
        let new = network.map(Contribution::from_network).unwrap_or_default();
        self.update(|n| n.config = new);
    }

    /// The `ip=` hostname and name servers.
    pub fn set_cmdline(&self, contribution: Contribution) {
        self.update(|n| n.cmdline = contribution);
    }

    /// What the lease on `ifname` says; `None` when it is gone.
    pub fn set_lease(&self, ifname: &str, contribution: Option<Contribution>) {
        self.update(|n| match contribution {
            Some(c) => {
                n.leases.insert(ifname.to_owned(), c);
            }
            None => {
                n.leases.remove(ifname);
            }
        });
    }

    /// The last resort, from a NIC's MAC; the first one offered stays.
    pub fn offer_fallback(&self, mac: &[u8]) {
        if self.lock().fallback.is_some() || mac.is_empty() {
            return;
        }
        self.update(|n| n.fallback = Some(hostname::fallback(mac)));
    }

    pub fn hostname(&self) -> HostnameStatus {
        self.lock().hostname()
    }

    pub fn resolvers(&self) -> ResolverStatus {
        self.lock().resolvers()
    }

    /// Changes whenever the applied hostname or resolv.conf changes.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<()> {
        self.lock().changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn names(dir: &tempfile::TempDir) -> SharedNames {
        SharedNames::new(dir.path().join("resolv.conf"), false)
    }

    fn lease(host: Option<&str>, dns: &[&str], search: &[&str]) -> Option<Contribution> {
        Some(Contribution {
            hostname: host.map(str::to_owned),
            nameservers: dns.iter().map(|s| ip(s)).collect(),
            search: search.iter().map(|s| (*s).to_owned()).collect(),
        })
    }

    #[test]
    fn the_strongest_source_wins_and_a_removed_one_hands_back() {
        let dir = tempfile::tempdir().unwrap();
        let resolv = dir.path().join("resolv.conf");
        let n = names(&dir);
        assert_eq!(n.hostname().source, NameSource::None);
        assert!(!resolv.exists(), "nothing to say yet");

        n.offer_fallback(&[0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert_eq!(n.hostname().hostname.as_deref(), Some("slate-123456"));
        assert_eq!(n.hostname().source, NameSource::Default);

        n.set_lease("eth0", lease(Some("from-dhcp"), &["10.0.0.53"], &["lan"]));
        assert_eq!(n.hostname().hostname.as_deref(), Some("from-dhcp"));
        let text = std::fs::read_to_string(&resolv).unwrap();
        assert!(
            text.contains("nameserver 10.0.0.53\nsearch lan\n"),
            "{text}"
        );

        let mut config = Network {
            hostname: Some("from-config".into()),
            nameservers: vec!["1.1.1.1".into()],
            ..Default::default()
        };
        n.set_config(Some(&config));
        assert_eq!(n.hostname().hostname.as_deref(), Some("from-config"));
        let r = n.resolvers();
        assert_eq!(
            (r.nameservers, r.source),
            (vec![ip("1.1.1.1")], NameSource::Config)
        );
        // The config's servers with DHCP's search domains.
        assert_eq!(r.search, vec!["lan".to_owned()]);

        // Taken out of the config: DHCP's values are back at once.
        config.hostname = None;
        config.nameservers.clear();
        n.set_config(Some(&config));
        assert_eq!(n.hostname().source, NameSource::Dhcp);
        let text = std::fs::read_to_string(&resolv).unwrap();
        assert!(text.contains("nameserver 10.0.0.53\n"), "{text}");

        // The lease goes: its server leaves resolv.conf, the name falls back.
        n.set_lease("eth0", None);
        assert_eq!(n.hostname().source, NameSource::Default);
        let text = std::fs::read_to_string(&resolv).unwrap();
        assert!(!text.contains("nameserver"), "{text}");
    }

    #[test]
    fn leases_combine_without_repeats_and_bad_names_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let n = names(&dir);
        n.set_lease(
            "eth1",
            lease(Some("bad name"), &["10.0.1.1", "10.0.0.1"], &[]),
        );
        n.set_lease("eth0", lease(None, &["10.0.0.1"], &["a.example"]));
        let r = n.resolvers();
        assert_eq!(r.nameservers, vec![ip("10.0.0.1"), ip("10.0.1.1")]);
        assert_eq!(r.search, vec!["a.example".to_owned()]);
        assert_eq!(n.hostname().source, NameSource::None);
        n.set_cmdline(Contribution {
            hostname: Some("node1".into()),
            nameservers: vec![ip("10.9.9.9")],
            search: Vec::new(),
        });
        assert_eq!(n.hostname().source, NameSource::Cmdline);
        assert_eq!(n.resolvers().nameservers, vec![ip("10.9.9.9")]);
    }

    #[test]
    fn a_change_wakes_subscribers_and_no_change_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let n = names(&dir);
        let mut rx = n.subscribe();
        rx.mark_unchanged();
        n.set_lease("eth0", lease(Some("h"), &[], &[]));
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        n.set_lease("eth0", lease(Some("h"), &[], &[]));
        assert!(!rx.has_changed().unwrap());
    }
}
