//! machined owns the machine config.
//!
//! # Boot flow (this stage of the project)
//! 1. Look for a nocloud config drive: a block device labelled `cidata`
//!    (ISO 9660 or vfat), found with libblkid, whose file `user-data` is the
//!    machine config YAML ([`configdrive`]).
//! 2. Parse and validate it. A valid config is published to
//!    `/run/slate/machine-config.json` for apid and networkd; otherwise one
//!    line naming the file, line and error goes to the console and to
//!    `/run/slate/machine-config.error`, and apid serves in safe mode
//!    ([`publish`]).
//! 3. Stay up: init restarts machined if it exits, and a restart would
//!    just publish the same verdict again.
//!
//! # Limitations
//! STATE persistence, `slate.config=URL`, apply-config and service
//! supervision come with their own issues.

pub mod configdrive;
pub mod publish;

use std::path::PathBuf;

use slate_machinery::constants;

/// Where machined publishes its verdict on the config.
#[derive(Debug, Clone)]
pub struct Paths {
    pub config: PathBuf,
    pub config_error: PathBuf,
    /// Where the config drive is mounted while it is read.
    pub mount_point: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            config: PathBuf::from(constants::MACHINE_CONFIG_FILE),
            config_error: PathBuf::from(constants::MACHINE_CONFIG_ERROR_FILE),
            mount_point: PathBuf::from(constants::RUN_DIR).join("cidata"),
        }
    }
}

/// Loads and publishes the config, then waits for signals forever.
pub fn run(paths: &Paths) -> ! {
    tracing::debug!("looking for the config drive");
    let verdict = match configdrive::read_user_data(&paths.mount_point) {
        Ok(Some(found)) => publish::Verdict::from_user_data(&found),
        Ok(None) => publish::Verdict::Missing,
        Err(e) => publish::Verdict::Unreadable(format!("{:#}", anyhow::Error::from(e))),
    };
    tracing::debug!("config drive read and parsed");
    if let Err(e) = publish::publish(&verdict, paths) {
        // Without a published verdict apid falls back to safe mode on its
        // own after a while; nothing better to do than say why.
        tracing::error!(
            "publishing the machine config: {:#}",
            anyhow::Error::from(e)
        );
    }
    loop {
        nix::unistd::pause();
    }
}
