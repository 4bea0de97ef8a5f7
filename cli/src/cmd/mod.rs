//! One module per subcommand.
pub mod gen_config;
pub mod machineconfig;
mod patch_args;
pub mod processes;
pub mod validate;
pub mod version;
