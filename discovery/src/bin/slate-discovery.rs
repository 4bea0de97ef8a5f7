//! slate-discovery: the mesh discovery service (see `slate_discovery::service`).
//! Arguments and wiring only.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use slate_discovery::service::Limits;

/// Slate's mesh discovery service: keeps the sealed affiliate records of
/// clusters' nodes for a TTL and lists them to the nodes. It never holds a
/// key and cannot read what it stores.
#[derive(Debug, Parser)]
#[command(name = "slate-discovery", version)]
struct Args {
    /// Address and port to listen on.
    #[arg(long, default_value_t = slate_discovery::node::NODE_LISTEN)]
    listen: SocketAddr,
    /// Seconds a record is kept after it was last published.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3600))]
    ttl: u64,
    /// Most records kept per cluster (at most 1024).
    #[arg(long, default_value_t = Limits::default().max_affiliates)]
    max_affiliates: usize,
    /// Most clusters kept.
    #[arg(long, default_value_t = Limits::default().max_clusters)]
    max_clusters: usize,
    /// Most MiB of records kept in all.
    #[arg(long, default_value_t = Limits::default().max_bytes >> 20)]
    max_mib: usize,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    slate_common::logging::init();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("slate-discovery: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs the service until it fails to listen or is killed.
fn run(args: Args) -> anyhow::Result<()> {
    let limits = Limits {
        ttl: Duration::from_secs(args.ttl),
        max_affiliates: args.max_affiliates,
        max_clusters: args.max_clusters,
        max_bytes: args.max_mib.saturating_mul(1 << 20),
        ..Limits::default()
    };
    // A public service: any cluster, no keys (records are sealed).
    Ok(slate_discovery::node::serve(args.listen, limits, None)?)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn arguments() {
        Args::command().debug_assert();
        let a = Args::try_parse_from(["slate-discovery"]).unwrap();
        assert_eq!(a.listen.to_string(), "[::]:3000");
        assert_eq!(a.ttl, 300);
        let a = Args::try_parse_from(["slate-discovery", "--listen", "127.0.0.1:9", "--ttl", "60"])
            .unwrap();
        assert_eq!((a.listen.port(), a.ttl), (9, 60));
        assert!(Args::try_parse_from(["slate-discovery", "--ttl", "0"]).is_err());
    }
}
