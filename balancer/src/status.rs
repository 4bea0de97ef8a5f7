//! The `apibalancer` resource: what `slatectl get apibalancer` shows.

use serde::Serialize;

use super::endpoints::{Endpoints, Health};

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BalancerStatus {
    /// `cluster.apiBalancer.enabled`, as networkd applied it.
    pub enabled: bool,
    /// Where it listens (`127.0.0.1:7445`), when it does.
    pub listen: Option<String>,
    /// The endpoint new connections go to first.
    pub preferred: Option<String>,
    /// `healthy/known`, e.g. `2/3`.
    pub healthy: String,
    pub active_connections: usize,
    /// Connections closed at once because the cap was reached.
    pub refused_connections: u64,
    /// Connections closed because no endpoint answered a dial.
    pub unserved_connections: u64,
    pub endpoints: Vec<EndpointStatus>,
    /// Why it is not listening, if it should be.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointStatus {
    pub endpoint: String,
    pub address: Option<String>,
    pub sources: Vec<String>,
    pub health: Health,
    pub healthy: bool,
    /// Smoothed probe latency in milliseconds (0.01 ms steps).
    pub latency_ms: Option<f64>,
    pub active_connections: usize,
    pub connections: u64,
    pub failed_dials: u64,
    pub error: Option<String>,
}

pub(crate) fn endpoints(e: &Endpoints) -> Vec<EndpointStatus> {
    e.iter()
        .map(|(t, s)| EndpointStatus {
            endpoint: t.to_string(),
            address: s.address.map(|a| a.to_string()),
            sources: s.sources.iter().cloned().collect(),
            health: s.health,
            healthy: s.health.healthy(),
            latency_ms: s
                .latency
                .map(|l| (l.as_secs_f64() * 100_000.0).round() / 100.0),
            active_connections: s.active,
            connections: s.connections,
            failed_dials: s.failed_dials,
            error: s.error.clone(),
        })
        .collect()
}
