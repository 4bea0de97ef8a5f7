//! The identity of this build, shown by `slatectl version` for the client
//! and reported by apid for the node.

/// Slate release.
pub const TAG: &str = env!("CARGO_PKG_VERSION");

/// Git commit the build came from (`SLATE_COMMIT` at build time, else
/// `git rev-parse`, else "unknown"), set by build.rs.
pub const COMMIT: &str = env!("SLATE_COMMIT");
