//! One module per subcommand.
pub mod apply_config;
pub mod completion;
pub mod config_new;
pub mod containers;
pub mod contexts;
pub mod etcd;
pub mod gen_config;
pub mod get;
pub mod join;
pub mod kubeconfig;
pub mod machineconfig;
mod patch_args;
pub mod power;
pub mod processes;
pub mod services;
pub mod upgrade;
pub mod validate;
pub mod version;
