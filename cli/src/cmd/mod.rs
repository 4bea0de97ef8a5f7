//! One module per subcommand.
pub mod gen_config;
pub mod processes;
pub mod version;
