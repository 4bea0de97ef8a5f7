//! nocloud config drives: an ISO 9660 volume labelled `cidata` holding
//! `user-data` (the machine config) and `meta-data`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, ensure};
use slate_common::constants::{CONFIG_DRIVE_LABEL, CONFIG_DRIVE_USER_DATA};

/// Writes a config drive image to `out` with `user_data` as its machine config.
pub fn build(user_data: &str, out: &Path) -> anyhow::Result<()> {
    let staging = tempfile::tempdir().context("creating a staging directory")?;
    std::fs::write(staging.path().join(CONFIG_DRIVE_USER_DATA), user_data)
        .context("writing user-data")?;
    std::fs::write(staging.path().join("meta-data"), "").context("writing meta-data")?;
    let output = Command::new("xorriso")
        .args([
            "-as",
            "mkisofs",
            "-quiet",
            "-V",
            CONFIG_DRIVE_LABEL,
            "-J",
            "-r",
            "-o",
        ])
        .arg(out)
        .arg(staging.path())
        .output()
        .context("running xorriso (install the Debian package xorriso, or run `make deps`)")?;
    ensure!(
        output.status.success(),
        "xorriso failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}
