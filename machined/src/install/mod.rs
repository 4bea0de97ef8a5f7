//! Slate on its disk: install, A/B upgrade, rollback, and a reset's wipe.
//!
//! The system disk (see `disk.rs` for the partition table) holds:
//! 1. EFI: a FAT image with GRUB for UEFI, written as data;
//! 2. BIOS boot: GRUB's core.img (with boot.img in the first 440 bytes);
//! 3. BOOT (ext4): `grub/grub.cfg`, `grub/grubenv`, slots `A/` and `B/`,
//!    each a kernel, initramfs, extension layer and `boot.cfg`;
//! 4. META: the slots' record ([`meta`]).
//!
//! Everything written comes from a release bundle (`slate-bundle`): the
//! install medium's (the ISO carries one unpacked in `/boot`), or one
//! streamed by `slatectl upgrade`, or fetched from a URL. The node has no
//! grub-install and no mkfs.vfat: the bootloader images are prepared by
//! `slate-image` and written here as bytes ([`grub`]).

pub mod gate;
pub mod grub;
pub mod meta;
pub mod rpc;
pub mod slots;

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write as _};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

use slate_bundle::{BundleError, FileDigest, Manifest, Part};

use crate::disk::{self, DiskError};
use meta::{Meta, MetaError, Slot, SlotState};
use slots::BootEnv;

/// Where BOOT is mounted while the node runs from its disk.
pub const BOOT_MOUNT: &str = "/run/slate/boot";
/// Where the install medium (the ISO) is mounted to install from it.
const MEDIUM_MOUNT: &str = "/run/slate/medium";
/// The unpacked bundle on the install medium.
const MEDIUM_BUNDLE: &str = "boot";
const BOOT_LABEL: &str = "BOOT";
const GRUB_DIR: &str = "grub";
const GRUBENV: &str = "grub/grubenv";
/// grub.cfg's variables: the slot that boots, and the one to boot once.
const GOOD_VAR: &str = "slate_good";
const TRY_VAR: &str = "slate_try";

/// Partition numbers (see `disk.rs`).
pub const EFI_NUMBER: u32 = 1;
pub const BIOS_NUMBER: u32 = 2;
pub const BOOT_NUMBER: u32 = 3;
pub const META_NUMBER: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the bundle")]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Grub(#[from] grub::GrubError),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("{0}")]
    Refused(String),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> InstallError {
    let path = path.to_owned();
    move |source| InstallError::Io { op, path, source }
}

/// The disk Slate runs from, named by its STATE partition.
#[derive(Debug, Clone)]
pub struct SystemDisk {
    pub disk: PathBuf,
}

impl SystemDisk {
    /// The disk holding the node's STATE, if it has one.
    pub fn find() -> Option<Self> {
        disk::find_state().and_then(|state| Self::of_state(&state))
    }

    pub fn of_state(state: &Path) -> Option<Self> {
        Some(Self {
            disk: disk::disk_of(state)?,
        })
    }

    pub fn partition(&self, number: u32) -> PathBuf {
        disk::partition_device(&self.disk, number)
    }

    /// META, read; a disk made before Slate had META has no partition 4.
    pub fn meta(&self) -> Result<Meta, InstallError> {
        let path = self.partition(META_NUMBER);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    InstallError::Refused(format!(
                        "{} has no META partition: its layout predates install and upgrade; reinstall it from the ISO",
                        self.disk.display()
                    ))
                } else {
                    InstallError::Io {
                        op: "opening",
                        path: path.clone(),
                        source: e,
                    }
                }
            })?;
        Ok(Meta::open(file)?)
    }

    /// Whether BOOT carries a filesystem (the disk was installed).
    pub fn has_boot(&self) -> bool {
        crate::blockdev::label_and_type(&self.partition(BOOT_NUMBER), &["ext4"])
            .is_some_and(|(label, _)| label == BOOT_LABEL)
    }

    /// Mounts BOOT on [`BOOT_MOUNT`] (once) and returns it.
    pub fn boot(&self) -> Result<Boot, InstallError> {
        let dir = PathBuf::from(BOOT_MOUNT);
        if !disk::is_mounted(&dir) {
            disk::mount(&self.partition(BOOT_NUMBER), &dir, "ext4", true)?;
        }
        Ok(Boot { dir })
    }

    /// Writes the bootloader for BIOS and UEFI from a slot directory that
    /// holds the bundle's `boot.img`, `core.img` and `efi.img`.
    fn write_bootloader(&self, from: &Path) -> Result<(), InstallError> {
        let read = |part: Part| {
            let path = from.join(part.file_name());
            std::fs::read(&path).map_err(io_err("reading", &path))
        };
        let (boot_img, core_img, efi_img) = (
            read(Part::BiosBoot)?,
            read(Part::BiosCore)?,
            read(Part::Efi)?,
        );
        let (bios_first, bios_sectors) = disk::partition_extent(&self.disk, BIOS_NUMBER)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.disk)
            .map_err(io_err("opening", &self.disk))?;
        grub::write_bios(&mut file, &boot_img, &core_img, bios_first, bios_sectors)?;
        file.sync_all().map_err(io_err("syncing", &self.disk))?;

        let efi = self.partition(EFI_NUMBER);
        let (_, efi_sectors) = disk::partition_extent(&self.disk, EFI_NUMBER)?;
        if efi_img.len() as u64 > efi_sectors * 512 {
            return Err(InstallError::Refused(format!(
                "efi.img is {} bytes, larger than the EFI partition",
                efi_img.len()
            )));
        }
        let mut part = OpenOptions::new()
            .write(true)
            .open(&efi)
            .map_err(io_err("opening", &efi))?;
        part.write_all(&efi_img).map_err(io_err("writing", &efi))?;
        part.sync_all().map_err(io_err("syncing", &efi))?;
        Ok(())
    }

    /// Destroys the filesystems of the partitions labelled in `labels`
    /// (STATE, EPHEMERAL): all of STATE (it is small and holds the keys),
    /// the start of EPHEMERAL after a discard of all of it. Run before
    /// anything mounts them.
    pub fn wipe(&self, labels: &[String]) -> Result<(), InstallError> {
        use slate_common::constants::{EPHEMERAL_LABEL, STATE_LABEL};
        for label in labels {
            let (number, whole) = match label.as_str() {
                STATE_LABEL => (disk::STATE_NUMBER, true),
                EPHEMERAL_LABEL => (disk::EPHEMERAL_NUMBER, false),
                other => {
                    return Err(InstallError::Refused(format!(
                        "cannot wipe {other:?}: only STATE and EPHEMERAL"
                    )));
                }
            };
            let device = self.partition(number);
            if !device.exists() {
                continue;
            }
            tracing::info!("reset: wiping {label} ({})", device.display());
            disk::wipe(&device, whole)?;
        }
        Ok(())
    }
}

/// BOOT, mounted.
pub struct Boot {
    pub dir: PathBuf,
}

impl Boot {
    /// GRUB's environment block; an absent one is empty.
    pub fn env(&self) -> Result<BootEnv, InstallError> {
        let path = self.dir.join(GRUBENV);
        if !path.exists() {
            return Ok(BootEnv::default());
        }
        let vars = grub::read_env(&path)?;
        let slot = |k: &str| vars.get(k).and_then(|v| Slot::parse(v));
        Ok(BootEnv {
            good: slot(GOOD_VAR),
            try_once: slot(TRY_VAR),
        })
    }

    /// Rewrites the environment block in place ([`grub::write_env`]):
    /// GRUB's `save_env` writes through the file's existing blocks, so the
    /// file is never replaced. The first write creates it.
    pub fn set_env(&self, env: BootEnv) -> Result<(), InstallError> {
        let path = self.dir.join(GRUBENV);
        let mut vars = std::collections::BTreeMap::new();
        vars.insert(
            GOOD_VAR.to_owned(),
            env.good.map(|s| s.name().to_owned()).unwrap_or_default(),
        );
        vars.insert(
            TRY_VAR.to_owned(),
            env.try_once
                .map(|s| s.name().to_owned())
                .unwrap_or_default(),
        );
        if path.exists() {
            grub::write_env(&path, &vars)?;
        } else {
            let block = grub::render_env(&vars)?;
            let mut file = File::create(&path).map_err(io_err("creating", &path))?;
            file.write_all(&block).map_err(io_err("writing", &path))?;
            file.sync_all().map_err(io_err("syncing", &path))?;
        }
        // Every operation ends here: what it wrote must be readable by GRUB.
        self.settle()
    }

    /// Makes everything written to BOOT visible to GRUB, which does not
    /// replay ext4's journal: fsync leaves new files and directories in the
    /// journal, a freeze writes them to their home blocks. A node killed
    /// after this boots what was written, even without a clean unmount.
    fn settle(&self) -> Result<(), InstallError> {
        let dir = File::open(&self.dir).map_err(io_err("opening", &self.dir))?;
        let mut unused: libc::c_int = 0;
        // SAFETY: FIFREEZE and FITHAW take an int pointer they ignore; the
        // descriptor is an open directory on BOOT for both calls.
        unsafe { fifreeze(dir.as_raw_fd(), &mut unused) }
            .map_err(|e| io_err("freezing", &self.dir)(e.into()))?;
        // SAFETY: as above.
        unsafe { fithaw(dir.as_raw_fd(), &mut unused) }
            .map_err(|e| io_err("thawing", &self.dir)(e.into()))?;
        Ok(())
    }

    /// The GRUB directory: grub.cfg and a fresh environment block.
    fn init_grub(&self) -> Result<(), InstallError> {
        let dir = self.dir.join(GRUB_DIR);
        std::fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        let cfg = dir.join("grub.cfg");
        slate_common::fs::write_atomic(&cfg, grub::grub_cfg().as_bytes(), 0o644)
            .map_err(|e| io_err("writing", &cfg)(io::Error::other(e)))?;
        self.set_env(BootEnv::default())
    }

    /// Writes a bundle into `slot`: into `<slot>.new` first, each file
    /// verified as it streams by, then swapped in by rename. With
    /// `bootloader`, also writes the bundle's GRUB to that disk.
    pub fn write_slot(
        &self,
        slot: Slot,
        source: impl FnOnce(
            &mut dyn FnMut(Part, &FileDigest, &mut dyn Read) -> io::Result<()>,
        ) -> Result<Manifest, BundleError>,
        bootloader: Option<&SystemDisk>,
    ) -> Result<Manifest, InstallError> {
        let new = self.dir.join(format!("{slot}.new"));
        if new.exists() {
            std::fs::remove_dir_all(&new).map_err(io_err("removing", &new))?;
        }
        std::fs::create_dir(&new).map_err(io_err("creating", &new))?;
        let mut sink = |part: Part, _: &FileDigest, r: &mut dyn Read| -> io::Result<()> {
            let mut file = File::create(new.join(part.file_name()))?;
            io::copy(r, &mut file)?;
            file.sync_all()
        };
        let manifest = match source(&mut sink) {
            Ok(m) => m,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&new);
                return Err(e.into());
            }
        };
        let with_extensions = manifest.file(Part::Extensions).is_some();
        let cfg = new.join("boot.cfg");
        std::fs::write(
            &cfg,
            grub::slot_cfg(slot, &manifest.cmdline, with_extensions)?,
        )
        .map_err(io_err("writing", &cfg))?;
        if let Some(disk) = bootloader {
            disk.write_bootloader(&new)?;
        }
        // The bootloader's images are not part of a slot.
        for part in Part::ALL.into_iter().filter(|p| !p.in_slot()) {
            let _ = std::fs::remove_file(new.join(part.file_name()));
        }
        sync_dir(&new)?;
        let dest = self.dir.join(slot.name());
        if dest.exists() {
            std::fs::remove_dir_all(&dest).map_err(io_err("removing", &dest))?;
        }
        std::fs::rename(&new, &dest).map_err(io_err("renaming", &new))?;
        sync_dir(&self.dir)?;
        // Home blocks before anything GRUB acts on points at the slot.
        self.settle()?;
        Ok(manifest)
    }
}

nix::ioctl_readwrite!(fifreeze, b'X', 119, libc::c_int);
nix::ioctl_readwrite!(fithaw, b'X', 120, libc::c_int);

fn sync_dir(dir: &Path) -> Result<(), InstallError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing", dir))
}

/// Finds the install medium: an ISO 9660 filesystem (a CD-ROM, or the
/// hybrid ISO written to a USB stick) with a bundle in `/boot`. Mounts it.
pub fn find_medium() -> Option<PathBuf> {
    let mount = PathBuf::from(MEDIUM_MOUNT);
    let bundle = mount.join(MEDIUM_BUNDLE);
    if disk::is_mounted(&mount) {
        return bundle
            .join(slate_bundle::MANIFEST)
            .exists()
            .then_some(bundle);
    }
    let sys = Path::new(crate::blockdev::SYS_CLASS_BLOCK);
    for device in crate::blockdev::dev_paths(crate::blockdev::names(sys)) {
        if crate::blockdev::label_and_type(&device, &["iso9660"]).is_none() {
            continue;
        }
        if disk::mount(&device, &mount, "iso9660", false).is_err() {
            continue;
        }
        if bundle.join(slate_bundle::MANIFEST).exists() {
            tracing::info!("install medium: {}", device.display());
            return Some(bundle);
        }
        let _ = nix::mount::umount(&mount);
    }
    None
}

/// Installs Slate on a disk that has just been partitioned: formats BOOT,
/// writes GRUB and slot A from `medium`, records A as good in META.
pub fn install(system: &SystemDisk, medium: &Path) -> Result<Manifest, InstallError> {
    disk::format_boot(&system.partition(BOOT_NUMBER), BOOT_LABEL)?;
    let boot = system.boot()?;
    boot.init_grub()?;
    let manifest = boot.write_slot(
        Slot::A,
        |sink| slate_bundle::read_dir(medium, sink),
        Some(system),
    )?;
    let mut meta = system.meta()?;
    meta.record = meta::Record::default();
    meta.set(
        Slot::A,
        SlotState::Good,
        Some(&manifest.version),
        "installed",
    );
    meta.save()?;
    boot.set_env(BootEnv {
        good: Some(Slot::A),
        try_once: None,
    })?;
    Ok(manifest)
}

/// After STATE was made or found on a disk without boot slots: installs
/// from the medium the node booted from (the ISO), if there is one. A node
/// booted by PXE or a direct kernel has none; `slatectl upgrade --image`
/// installs it. Failures are logged: the config is kept either way.
pub fn install_from_medium(state: &Path) {
    let Some(system) = SystemDisk::of_state(state) else {
        return;
    };
    // A STATE made after a reset supersedes a wipe still pending (one cut
    // short by a power loss): it must not take the new keys at next boot.
    if let Ok(mut meta) = system.meta()
        && !meta.record.wipe.is_empty()
    {
        meta.record.wipe.clear();
        if let Err(e) = meta.save() {
            tracing::error!("clearing a pending wipe: {:#}", anyhow::Error::from(e));
        }
    }
    if system.has_boot() || !system.partition(BOOT_NUMBER).exists() {
        return;
    }
    let Some(medium) = find_medium() else {
        tracing::info!(
            "no install medium: {} keeps STATE and EPHEMERAL; `slatectl upgrade --image` installs its boot slots",
            system.disk.display()
        );
        return;
    };
    let started = std::time::Instant::now();
    match install(&system, &medium) {
        Ok(manifest) => tracing::info!(
            "installed Slate {} on {} (slot A) in {:.1}s: the next boot can come from the disk alone",
            manifest.version,
            system.disk.display(),
            started.elapsed().as_secs_f64()
        ),
        Err(e) => tracing::error!(
            "installing on {}: {:#}",
            system.disk.display(),
            anyhow::Error::from(e)
        ),
    }
    let _ = nix::mount::umount(Path::new(MEDIUM_MOUNT));
}

/// Writes a bundle from `input` into the slot not booted and arms GRUB to
/// boot it once. On a disk not installed yet, installs (BOOT, GRUB, slot
/// A). Nothing GRUB reads changes until every byte has been verified.
pub fn upgrade(
    system: &SystemDisk,
    booted: Option<Slot>,
    input: impl Read,
) -> Result<(Slot, Manifest), InstallError> {
    // META first: a disk whose layout predates install has none, and is
    // refused before anything is formatted.
    let mut meta = system.meta()?;
    if !system.has_boot() {
        disk::format_boot(&system.partition(BOOT_NUMBER), BOOT_LABEL)?;
    }
    let boot = system.boot()?;
    if !boot.dir.join(GRUB_DIR).join("grub.cfg").exists() || !boot.dir.join(GRUBENV).exists() {
        boot.init_grub()?;
    }
    let env = boot.env()?;
    // Nothing on the disk GRUB could boot (never installed, or an install
    // that broke off): the bootloader is written with the slot.
    let fresh = env.good.is_none()
        && !meta
            .record
            .slots
            .values()
            .any(|r| r.state == SlotState::Good);
    let slot = slots::target(&meta.record, booted, &env).map_err(InstallError::Refused)?;
    // A stale one-shot at the target first: a cut after it is harmless.
    if env.try_once == Some(slot) {
        boot.set_env(BootEnv {
            try_once: None,
            ..env
        })?;
    }
    tracing::info!("upgrade: writing slot {slot}");
    meta.set(slot, SlotState::Writing, Some(""), "");
    meta.save()?;
    // The bootloader is written at install only: rewriting it is not A/B,
    // and a cut there would leave no bootable disk.
    let written = boot.write_slot(
        slot,
        |sink| slate_bundle::read(input, sink),
        fresh.then_some(system),
    );
    let manifest = match written {
        Ok(m) => m,
        Err(e) => {
            let why = format!("upgrade refused: {:#}", anyhow::Error::from(e));
            meta.set(slot, SlotState::Failed, None, &why);
            meta.save()?;
            return Err(InstallError::Refused(why));
        }
    };
    meta.set(slot, SlotState::Staged, Some(&manifest.version), "");
    meta.save()?;
    let env = boot.env()?;
    boot.set_env(BootEnv {
        try_once: Some(slot),
        // A fresh install has nothing else to fall back to.
        good: env.good.or(fresh.then_some(slot)),
    })?;
    Ok((slot, manifest))
}

/// Makes the other slot the one GRUB boots; it must be good.
pub fn rollback(system: &SystemDisk, booted: Option<Slot>) -> Result<Slot, InstallError> {
    let boot = system.boot()?;
    let env = boot.env()?;
    let current = booted.or(env.good).unwrap_or(Slot::A);
    let to = current.other();
    let mut meta = system.meta()?;
    match meta.record.slots.get(&to) {
        Some(r) if r.state == SlotState::Good => {}
        Some(r) => {
            return Err(InstallError::Refused(format!(
                "slot {to} is {} ({}): only a good slot can be rolled back to",
                r.state.name(),
                r.reason
            )));
        }
        None => {
            return Err(InstallError::Refused(format!(
                "slot {to} holds nothing to roll back to"
            )));
        }
    }
    if let Some(r) = meta.record.slots.get(&current)
        && r.state == SlotState::Trying
    {
        meta.set(
            current,
            SlotState::Failed,
            None,
            "rolled back by hand while on trial",
        );
        meta.save()?;
    }
    boot.set_env(BootEnv {
        good: Some(to),
        try_once: None,
    })?;
    Ok(to)
}

/// The health gate's verdict on `slot`, recorded, unless the slot left
/// its trial meanwhile (rolled back by hand). On a pass, grubenv first: a
/// cut before META follows leaves the slot on trial, and its gate runs
/// again at the next boot.
pub fn judge(
    system: &SystemDisk,
    slot: Slot,
    verdict: Result<(), String>,
) -> Result<(), InstallError> {
    let boot = system.boot()?;
    let mut meta = system.meta()?;
    if meta.record.slots.get(&slot).map(|r| r.state) != Some(SlotState::Trying) {
        tracing::info!("slot {slot} is no longer on trial: the health gate's verdict is dropped");
        return Ok(());
    }
    match verdict {
        Ok(()) => {
            let env = boot.env()?;
            boot.set_env(BootEnv {
                good: Some(slot),
                ..env
            })?;
            meta.set(slot, SlotState::Good, None, "passed the health gate");
            meta.save()?;
        }
        Err(why) => {
            meta.set(slot, SlotState::Failed, None, &why);
            meta.save()?;
        }
    }
    Ok(())
}

/// At boot, before STATE is mounted: runs a wipe a reset asked for, then
/// settles the slots' record. Returns the disk, and the slot on trial.
pub fn at_boot(cmdline: &str) -> Option<(SystemDisk, Option<Slot>)> {
    let system = SystemDisk::find()?;
    let mut meta = match system.meta() {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!("{:#}", anyhow::Error::from(e));
            return Some((system, None));
        }
    };
    // Not when machined restarts within a boot: STATE is mounted then,
    // and the wipe waits for the reboot the reset asked for.
    let state_mounted = disk::is_mounted(Path::new(slate_common::constants::STATE_MOUNT));
    if !meta.record.wipe.is_empty() && !state_mounted {
        // One label at a time, each taken off the list once done.
        while let Some(label) = meta.record.wipe.first().cloned() {
            if let Err(e) = system.wipe(std::slice::from_ref(&label)) {
                tracing::error!("reset: {:#}", anyhow::Error::from(e));
                break;
            }
            tracing::info!("reset: wiped {label}");
            meta.record.wipe.remove(0);
            if let Err(e) = meta.save() {
                tracing::error!("reset: {:#}", anyhow::Error::from(e));
                break;
            }
        }
    }
    if !system.has_boot() {
        return Some((system, None));
    }
    let booted = slots::booted(cmdline);
    let trial = (|| {
        let boot = system.boot()?;
        let env = boot.env()?;
        if slots::reconcile(&mut meta.record, booted, &env, meta::now()) {
            meta.save()?;
        }
        for v in slots::views(&meta.record, booted, &env) {
            tracing::info!(
                "boot slot {}: {} {}{}{}",
                v.slot,
                v.version,
                v.state.name(),
                if v.active { ", running" } else { "" },
                if v.reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", v.reason)
                }
            );
        }
        Ok::<_, InstallError>(slots::on_trial(&meta.record, booted))
    })();
    match trial {
        Ok(trial) => Some((system, trial)),
        Err(e) => {
            tracing::error!("boot slots: {:#}", anyhow::Error::from(e));
            Some((system, None))
        }
    }
}
