//! Shared pieces of Slate that several binaries need:
//! - [`constants`]: paths, ports and names every binary agrees on;
//! - [`error`]: an error and its causes on one line;
//! - [`fs`]: atomic state writes;
//! - [`config`]: the machine config schema;
//! - [`clientconfig`]: slatectl's contexts;
//! - [`pki`]: the machine CA, role-carrying client certificates, server certificates;
//! - [`tls`]: rustls configurations for apid and its clients;
//! - [`client`]: connecting to apid;
//! - [`logging`]: the daemons' console log format;
//! - [`version`]: what this build is;
//! - [`yaml`]: YAML in and out with positions in errors.
pub mod client;
pub mod clientconfig;
pub mod config;
pub mod constants;
pub mod error;
pub mod extension_service;
pub mod fs;
pub mod generate;
pub mod logging;
pub mod pki;
pub mod tls;
pub mod version;
pub mod yaml;
