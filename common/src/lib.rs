//! What every Slate binary agrees on, PID 1 included: so it pulls in no
//! async runtime, TLS or RPC stack.
//! - [`constants`]: paths, ports and names;
//! - [`error`]: an error and its causes on one line;
//! - [`fs`]: atomic state writes;
//! - [`version`]: what this build is;
//! - [`logging`] (feature `logging`): the daemons' console log format.
pub mod constants;
pub mod error;
pub mod fs;
#[cfg(feature = "logging")]
pub mod logging;
pub mod version;
