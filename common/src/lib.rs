//! What every Slate binary agrees on, PID 1 included: so it pulls in no
//! async runtime, TLS or RPC stack.
//! - [`caps`]: Linux capabilities by name;
//! - [`constants`]: paths, ports and names;
//! - [`error`]: an error and its causes on one line;
//! - [`fs`]: atomic state writes;
//! - [`host`] (feature `host`): the node's hostname, addresses and API names;
//! - [`listen`] (feature `tokio`): a TCP port on every address;
//! - [`hostport`]: `host:port` as users and configs write it;
//! - [`ratelimit`]: log lines a flood cannot multiply;
//! - [`version`]: what this build is;
//! - [`hex`]: lowercase hex, how digests are printed;
//! - [`logging`] (feature `logging`): the daemons' console log format.
pub mod caps;
pub mod constants;
pub mod error;
pub mod fs;
#[cfg(feature = "host")]
pub mod host;
pub mod hostport;
#[cfg(feature = "tokio")]
pub mod listen;
#[cfg(feature = "logging")]
pub mod logging;
pub mod ratelimit;
pub mod version;

/// Lowercase hex of `bytes`: how SHA-256 digests are written in configs,
/// manifests and messages.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
