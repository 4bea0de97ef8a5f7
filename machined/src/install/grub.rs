//! GRUB on the system disk, written without `grub-install`.
//!
//! The node has no grub-install and no shell: the image builder prepares
//! `boot.img`, `core.img` (i386-pc) and `BOOTX64.EFI` with `grub-mkimage`
//! (image/src/grub.rs), and machined puts them on the disk:
//!
//! * UEFI: `BOOTX64.EFI` is copied to [`EFI_BOOT_PATH`] on partition 1, the
//!   removable-media path, so no NVRAM entry is needed.
//! * BIOS: [`write_bios`] does what grub-bios-setup (grub 2.06,
//!   util/setup.c) does for a GPT disk with a BIOS boot partition.
//!
//! Both images have the prefix `(,gpt3)/grub`: GRUB's kern/main.c
//! (`grub_set_prefix_and_root`) fills a device that starts with `,` with
//! the drive it was loaded from, so GRUB reads `/grub/grub.cfg` on BOOT
//! (partition 3) of its own disk whatever that disk's number.
//!
//! BOOT holds the static [`grub_cfg`], `grubenv` ([`parse_env`],
//! [`render_env`], [`write_env`]) and one directory per [`Slot`] with the
//! kernel, the initramfs and a [`slot_cfg`] snippet.
//!
//! # The one-shot try
//! `slate_good` names the slot that booted well; `slate_try` the slot to
//! boot once. GRUB clears `slate_try` in grubenv *before* it boots that
//! slot, so a slot whose kernel panics (`panic=-1` reboots at once) or
//! hangs until a watchdog resets the machine is not tried again: the next
//! boot is `slate_good`. If GRUB cannot clear it, it boots `slate_good`.
//!
//! # BOOT's ext4 and GRUB
//! GRUB 2.06 reads ext4 without replaying its journal (grub-core/fs/ext2.c
//! ignores `needs_recovery`). A file or directory made on BOOT is visible
//! to GRUB only once the kernel has checkpointed the journal: unmount BOOT,
//! or freeze and thaw it (FIFREEZE/FITHAW), after writing a slot and before
//! arming `slate_try` or rebooting. grubenv is the exception: [`write_env`]
//! overwrites its data block in place, which needs no metadata change.
//!
//! # Limitations
//! No Reed-Solomon codes in core.img (grub-bios-setup's default adds them
//! to repair a core.img that other software overwrote partly): the BIOS
//! boot partition belongs to GRUB alone.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

pub use super::meta::Slot;

/// GRUB's sector (GRUB_DISK_SECTOR_SIZE); BIOS booting reads 512-byte
/// sectors whatever the disk's logical sector size.
pub const SECTOR: u64 = 512;

/// Where UEFI firmware looks for a boot loader on removable media (and,
/// without an NVRAM entry, on fixed disks too), relative to the ESP.
pub const EFI_BOOT_PATH: &str = "EFI/BOOT/BOOTX64.EFI";

/// GPT type of the BIOS boot partition, 21686148-6449-6E6F-744E-656564454649,
/// in GPT's mixed-endian byte order (it spells "Hah!IdontNeedEFI").
pub const BIOS_BOOT_TYPE: [u8; 16] = *b"Hah!IdontNeedEFI";

/// The size of grubenv: what grub-editenv creates (util/editenv.c,
/// DEFAULT_ENVBLK_SIZE). GRUB's save_env can only rewrite the blocks the
/// file has, so the file keeps this size forever.
pub const ENV_SIZE: usize = 1024;

/// First line of every environment block (include/grub/lib/envblk.h).
const ENV_SIGNATURE: &[u8] = b"# GRUB Environment Block\n";

// Offsets in boot.img, from grub 2.06 include/grub/i386/pc/boot.h.
/// GRUB_BOOT_MACHINE_BPB_START..GRUB_BOOT_MACHINE_BPB_END: a FAT BIOS
/// parameter block; setup.c keeps the disk's bytes there.
const BPB: std::ops::Range<usize> = 0x03..0x5a;
/// GRUB_BOOT_MACHINE_KERNEL_SECTOR: LE64, the sector boot.img loads
/// (core.img's first sector, diskboot).
const KERNEL_SECTOR: usize = 0x5c;
/// GRUB_BOOT_MACHINE_BOOT_DRIVE: 0xff = use the drive the BIOS passed in DL.
const BOOT_DRIVE: usize = 0x64;
/// GRUB_BOOT_MACHINE_DRIVE_CHECK: a 2-byte jmp setup.c replaces with two
/// NOPs on hard disks, for BIOSes that pass a wrong DL.
const DRIVE_CHECK: usize = 0x66;
/// GRUB_BOOT_MACHINE_WINDOWS_NT_MAGIC..GRUB_BOOT_MACHINE_PART_END: disk
/// signature and partition table, kept from the disk.
const PART_TABLE: std::ops::Range<usize> = 0x1b8..0x1fe;
/// GRUB_BOOT_MACHINE_LIST_SIZE: one blocklist entry in diskboot
/// (start LE64, length LE16, segment LE16), growing down from the end of
/// core.img's first sector.
const LIST_SIZE: usize = 12;
/// Where diskboot loads the second sector of core.img: setup.c's first
/// `current_segment`, GRUB_BOOT_I386_PC_KERNEL_SEG (include/grub/offsets.h)
/// plus one sector in paragraphs.
const FIRST_SEGMENT: u16 = 0x800 + (SECTOR as u16 >> 4);
/// GRUB_KERNEL_I386_PC_NO_REED_SOLOMON_LENGTH, in core.img's second
/// sector: 0xffff means a core.img from another GRUB version (setup.c).
const NO_RS_LENGTH: usize = 0x14;
/// The most sectors setup.c embeds: core.img must fit below 0x78000 when
/// loaded at GRUB_KERNEL_I386_PC_LINK_ADDR (0x9000).
pub const CORE_MAX_SECTORS: u64 = (0x78000 - 0x9000) / SECTOR;

/// A failure to write GRUB or its environment.
#[derive(Debug, thiserror::Error)]
pub enum GrubError {
    #[error("boot.img is {0} bytes, not 512 with the 0x55AA signature")]
    BootImage(usize),
    #[error("core.img: {0}")]
    CoreImage(&'static str),
    #[error(
        "core.img needs {sectors} sectors; the BIOS boot partition has {room} (GRUB loads at most {CORE_MAX_SECTORS})"
    )]
    CoreTooLarge { sectors: u64, room: u64 },
    #[error("the BIOS boot partition cannot start at sector {0}")]
    BiosPartition(u64),
    #[error("sector 0 is not a GPT protective MBR: {0}; refusing to write boot code")]
    NotGpt(&'static str),
    #[error("{op} the disk")]
    Disk {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("grubenv is not a GRUB environment block: {0}")]
    EnvFormat(String),
    #[error("grubenv: {0}")]
    EnvContent(String),
    #[error("{op} {path}")]
    EnvFile {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel command line: {0}")]
    Cmdline(String),
}

fn disk_err(op: &'static str) -> impl FnOnce(std::io::Error) -> GrubError {
    move |source| GrubError::Disk { op, source }
}

/// Writes GRUB's BIOS boot code: `core_img` into the BIOS boot partition
/// (`bios_sectors` 512-byte sectors from `bios_first_lba`) and `boot_img`'s
/// code into the protective MBR, as grub 2.06's util/setup.c does for a
/// GPT disk, without Reed-Solomon codes. The MBR's partition table, disk
/// signature and BPB area stay the disk's. The extent is in 512-byte
/// sectors, GRUB's unit, whatever the disk's logical sector size.
pub fn write_bios(
    disk: &mut (impl Read + Write + Seek),
    boot_img: &[u8],
    core_img: &[u8],
    bios_first_lba: u64,
    bios_sectors: u64,
) -> Result<(), GrubError> {
    let boot: &[u8; SECTOR as usize] = boot_img
        .try_into()
        .ok()
        .filter(|b: &&[u8; 512]| b[510..] == [0x55, 0xaa])
        .ok_or(GrubError::BootImage(boot_img.len()))?;
    // LBA 0 is the MBR; GPT's header and table follow it.
    if bios_first_lba < 2 {
        return Err(GrubError::BiosPartition(bios_first_lba));
    }
    let core = patched_core(core_img, bios_first_lba, bios_sectors)?;

    let mut old = [0u8; SECTOR as usize];
    disk.seek(SeekFrom::Start(0))
        .and_then(|_| disk.read_exact(&mut old))
        .map_err(disk_err("reading the MBR of"))?;
    check_protective_mbr(&old)?;
    let mbr = patched_mbr(boot, &old, bios_first_lba);

    // core.img first, then the MBR that points at it (setup.c's order): a
    // crash in between leaves the old MBR code, never one that jumps into
    // a half-written core.img.
    let offset = bios_first_lba
        .checked_mul(SECTOR)
        .ok_or(GrubError::BiosPartition(bios_first_lba))?;
    disk.seek(SeekFrom::Start(offset))
        .and_then(|_| disk.write_all(&core))
        .and_then(|()| disk.flush())
        .map_err(disk_err("writing core.img to"))?;
    disk.seek(SeekFrom::Start(0))
        .and_then(|_| disk.write_all(&mbr))
        .and_then(|()| disk.flush())
        .map_err(disk_err("writing the MBR of"))
}

/// The MBR must be GPT's protective MBR: boot code written over anything
/// else (a DOS partition table, somebody's boot sector) is not ours to
/// replace.
fn check_protective_mbr(mbr: &[u8; SECTOR as usize]) -> Result<(), GrubError> {
    if mbr[510..] != [0x55, 0xaa] {
        return Err(GrubError::NotGpt("no 0x55AA signature"));
    }
    // Four 16-byte entries from 0x1be; the type is byte 4 of an entry.
    let protective = (0..4).any(|i| mbr[0x1be + 16 * i + 4] == 0xee);
    if !protective {
        return Err(GrubError::NotGpt("no partition of type 0xEE"));
    }
    Ok(())
}

/// boot.img with the disk's BPB area and partition table (setup.c copies
/// both from the sector it replaces), the drive check NOPed as setup.c
/// does for hard disks, and `write_rootdev`'s two fields: boot drive 0xff
/// (take DL) and the sector of core.img.
fn patched_mbr(
    boot: &[u8; SECTOR as usize],
    old: &[u8; SECTOR as usize],
    core_lba: u64,
) -> [u8; SECTOR as usize] {
    let mut mbr = *boot;
    mbr[BPB].copy_from_slice(&old[BPB]);
    mbr[PART_TABLE].copy_from_slice(&old[PART_TABLE]);
    mbr[DRIVE_CHECK] = 0x90;
    mbr[DRIVE_CHECK + 1] = 0x90;
    mbr[BOOT_DRIVE] = 0xff;
    mbr[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&core_lba.to_le_bytes());
    mbr
}

/// core.img padded to whole sectors with diskboot's blocklist set for a
/// contiguous copy at `first_lba`: boot.img loads the first sector, the one
/// entry covers the rest (setup.c's save_blocklists merges contiguous
/// sectors into one), and the entry below it is the zero terminator.
fn patched_core(core_img: &[u8], first_lba: u64, room: u64) -> Result<Vec<u8>, GrubError> {
    let sector = SECTOR as usize;
    if core_img.len() < sector + NO_RS_LENGTH + 2 {
        return Err(GrubError::CoreImage("too small"));
    }
    let sectors = core_img.len().div_ceil(sector) as u64;
    if sectors > room || sectors > CORE_MAX_SECTORS {
        return Err(GrubError::CoreTooLarge { sectors, room });
    }
    let no_rs = u16::from_le_bytes([
        core_img[sector + NO_RS_LENGTH],
        core_img[sector + NO_RS_LENGTH + 1],
    ]);
    if no_rs == 0xffff {
        return Err(GrubError::CoreImage(
            "version mismatch (not an i386-pc core.img of this GRUB)",
        ));
    }
    let mut core = core_img.to_vec();
    core.resize(sectors as usize * sector, 0);

    // Clear grub-mkimage's default entries, top down, as setup.c does; a
    // core.img whose list never ends is not diskboot's.
    let first = sector - LIST_SIZE;
    let mut at = first;
    while core[at + 8..at + 10] != [0, 0] {
        core[at..at + LIST_SIZE].fill(0);
        at = at
            .checked_sub(LIST_SIZE)
            .filter(|&a| a > 0)
            .ok_or(GrubError::CoreImage("no terminator in the blocklist"))?;
    }
    if sectors > 1 {
        // At most CORE_MAX_SECTORS, so the length fits in 16 bits.
        let rest = (sectors - 1) as u16;
        core[first..first + 8].copy_from_slice(&(first_lba + 1).to_le_bytes());
        core[first + 8..first + 10].copy_from_slice(&rest.to_le_bytes());
        core[first + 10..first + 12].copy_from_slice(&FIRST_SEGMENT.to_le_bytes());
        core[first - LIST_SIZE..first].fill(0);
    }
    Ok(core)
}

/// `/grub/grub.cfg` on BOOT: the same for every node and every version.
///
/// GRUB reads it from `$prefix` = `(hdN,gpt3)/grub`, so `$root` is BOOT
/// and the slots are `/A/` and `/B/`. Only `slate_good` and `slate_try`
/// are taken from grubenv (load_env's whitelist), so a grubenv edited by
/// hand cannot set `prefix` or `root`.
pub fn grub_cfg() -> String {
    "\
# Slate's boot menu: written by machined, the same on every node.
# Slots are /A and /B on this partition; grubenv chooses between them.
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout_style=menu
set timeout=1

load_env -f $prefix/grubenv slate_good slate_try
# Menu entries by number, A first: GRUB 2.06's fallback takes no ids.
if [ \"$slate_good\" = B ]; then
    set default=1
else
    set default=0
fi
# A one-shot try: cleared in grubenv before it boots, so a slot that
# panics or hangs gets one chance and the next boot is slate_good. One
# that GRUB cannot even load falls back to slate_good at once.
if [ \"$slate_try\" = A -o \"$slate_try\" = B ]; then
    set slate_next=$slate_try
    set slate_try=
    if save_env -f $prefix/grubenv slate_try; then
        set fallback=$default
        set default=0
        if [ \"$slate_next\" = B ]; then
            set default=1
        fi
        echo \"Slate: trying slot $slate_next once\"
    else
        echo \"Slate: cannot clear slate_try in grubenv; booting the good slot\"
    fi
fi

menuentry \"Slate A\" --id A {
    source /A/boot.cfg
}
menuentry \"Slate B\" --id B {
    source /B/boot.cfg
}
"
    .to_owned()
}

/// `/<slot>/boot.cfg`: the kernel and initramfs of `slot`, sourced by
/// [`grub_cfg`]'s menu entry. The extension layer comes first: the kernel
/// finds the next archive after an uncompressed cpio, not after a
/// zstd-compressed one.
pub fn slot_cfg(slot: Slot, cmdline: &str, with_extensions: bool) -> Result<String, GrubError> {
    let mut line = format!("linux /{slot}/vmlinuz");
    for word in cmdline.split([' ', '\t']).filter(|w| !w.is_empty()) {
        line.push(' ');
        line.push_str(&grub_word(word)?);
    }
    let _ = writeln!(line, " slate.slot={slot}");
    if with_extensions {
        let _ = writeln!(line, "initrd /{slot}/extensions.cpio /{slot}/initramfs.zst");
    } else {
        let _ = writeln!(line, "initrd /{slot}/initramfs.zst");
    }
    Ok(line)
}

/// One kernel argument as a GRUB script word: as it is when GRUB's lexer
/// leaves it alone, else in single quotes (no expansion inside them; a
/// quote itself is `'\''`). `linux` joins its words with single spaces,
/// so the kernel sees the word unchanged.
fn grub_word(word: &str) -> Result<String, GrubError> {
    if let Some(c) = word.chars().find(|c| c.is_control()) {
        return Err(GrubError::Cmdline(format!(
            "control character {c:?} in {word:?}"
        )));
    }
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-.,:=/+@%".contains(c);
    if word.chars().all(plain) {
        return Ok(word.to_owned());
    }
    Ok(format!("'{}'", word.replace('\'', r"'\''")))
}

/// Reads a GRUB environment block as GRUB's load_env sees it
/// (grub-core/lib/envblk.c, grub_envblk_iterate): lines after the
/// signature are `name=value` with `\`-escapes, lines starting with `#`
/// are comments (the `#` padding is one), and a later name wins. Unlike
/// GRUB, which stops silently at a broken line, a broken block is an error.
pub fn parse_env(block: &[u8]) -> Result<BTreeMap<String, String>, GrubError> {
    let bad = |what: &str| GrubError::EnvFormat(what.to_owned());
    let mut rest = block
        .strip_prefix(ENV_SIGNATURE)
        .ok_or_else(|| bad("no \"# GRUB Environment Block\" signature"))?;
    let mut vars = BTreeMap::new();
    while let Some(&first) = rest.first() {
        if first == b'#' {
            rest = skip_line(rest);
            continue;
        }
        let eq = rest
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| bad("a line without '='"))?;
        let name = std::str::from_utf8(&rest[..eq]).map_err(|_| bad("a name is not UTF-8"))?;
        if name.contains('\n') {
            return Err(bad("a line without '='"));
        }
        let mut value = Vec::new();
        let mut i = eq + 1;
        loop {
            match rest.get(i) {
                None => return Err(bad("the last line has no newline")),
                Some(b'\n') => break,
                Some(b'\\') => {
                    value.push(*rest.get(i + 1).ok_or_else(|| bad("a dangling '\\'"))?);
                    i += 2;
                }
                Some(&b) => {
                    value.push(b);
                    i += 1;
                }
            }
        }
        let value = String::from_utf8(value).map_err(|_| bad("a value is not UTF-8"))?;
        vars.insert(name.to_owned(), value);
        rest = &rest[i + 1..];
    }
    Ok(vars)
}

/// The rest after the line `rest` starts with (envblk.c's find_next_line:
/// a `\` escapes the next byte, even a newline).
fn skip_line(rest: &[u8]) -> &[u8] {
    let mut i = 0;
    while i < rest.len() {
        match rest[i] {
            b'\\' => i += 2,
            b'\n' => return &rest[i + 1..],
            _ => i += 1,
        }
    }
    &[]
}

/// A GRUB environment block of exactly [`ENV_SIZE`] bytes: the signature,
/// `name=value` lines, `#` up to the end, as grub-editenv and GRUB's
/// save_env write it. Names are GRUB variable names (`[A-Za-z0-9_]`);
/// values may not hold a newline, a backslash or NUL (GRUB would escape
/// the first two; nothing of Slate's needs them, and refusing keeps every
/// line one plain line).
pub fn render_env(vars: &BTreeMap<String, String>) -> Result<[u8; ENV_SIZE], GrubError> {
    let mut text = Vec::with_capacity(ENV_SIZE);
    text.extend_from_slice(ENV_SIGNATURE);
    for (name, value) in vars {
        let name_ok =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !name_ok {
            return Err(GrubError::EnvContent(format!(
                "{name:?} is not a GRUB variable name"
            )));
        }
        if value.contains(['\n', '\\', '\0']) {
            return Err(GrubError::EnvContent(format!(
                "the value of {name} holds a newline, backslash or NUL"
            )));
        }
        text.extend_from_slice(name.as_bytes());
        text.push(b'=');
        text.extend_from_slice(value.as_bytes());
        text.push(b'\n');
    }
    if text.len() > ENV_SIZE {
        return Err(GrubError::EnvContent(format!(
            "{} bytes do not fit in the {ENV_SIZE}-byte block",
            text.len()
        )));
    }
    let mut block = [b'#'; ENV_SIZE];
    block[..text.len()].copy_from_slice(&text);
    Ok(block)
}

/// Reads and parses grubenv.
pub fn read_env(path: &Path) -> Result<BTreeMap<String, String>, GrubError> {
    let block = std::fs::read(path).map_err(|source| GrubError::EnvFile {
        op: "reading",
        path: path.to_owned(),
        source,
    })?;
    parse_env(&block)
}

/// Replaces the variables in grubenv, in place.
///
/// In place, never by rename, and the file must already be [`ENV_SIZE`]
/// bytes: GRUB 2.06 does not replay the ext4 journal, so after a crash it
/// can see the old inode and directory entry (a rename lives only in the
/// journal until the kernel checkpoints it), while data overwritten in
/// place goes to the file's own blocks on fsync (data=ordered; BOOT must
/// not be mounted data=journal). The same blocks are also the ones GRUB's
/// save_env writes, by blocklist. grub-editenv instead truncates and
/// rewrites, which leaves an empty file if power fails in between.
/// Slate's variables fit in the first 512-byte sector, so even a torn
/// write leaves either the old or the new variables.
pub fn write_env(path: &Path, vars: &BTreeMap<String, String>) -> Result<(), GrubError> {
    let block = render_env(vars)?;
    let file_err = |op| {
        let path = path.to_owned();
        move |source| GrubError::EnvFile { op, path, source }
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(file_err("opening"))?;
    let size = file
        .metadata()
        .map_err(file_err("reading the size of"))?
        .len();
    if size != ENV_SIZE as u64 {
        return Err(GrubError::EnvContent(format!(
            "{} is {size} bytes, not {ENV_SIZE}: GRUB's save_env could not rewrite it",
            path.display()
        )));
    }
    file.write_all_at(&block, 0)
        .and_then(|()| file.sync_data())
        .map_err(file_err("writing"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const FIRST: u64 = 206_848;

    /// A stand-in boot.img: distinct bytes everywhere, and the real one's
    /// jmp at the drive check.
    fn boot_img() -> Vec<u8> {
        let mut b: Vec<u8> = (0..512).map(|i| (i % 251) as u8 | 1).collect();
        b[DRIVE_CHECK] = 0xeb;
        b[DRIVE_CHECK + 1] = 0x05;
        b[510] = 0x55;
        b[511] = 0xaa;
        b
    }

    /// A stand-in core.img of `sectors` sectors (the last one partial)
    /// with grub-mkimage's default blocklist.
    fn core_img(sectors: usize) -> Vec<u8> {
        let mut c = vec![0x11u8; sectors * 512 - 100];
        c[400..512].fill(0);
        c[500..508].copy_from_slice(&2u64.to_le_bytes());
        c[508..510].copy_from_slice(&(sectors as u16 - 1).to_le_bytes());
        c[510..512].copy_from_slice(&FIRST_SEGMENT.to_le_bytes());
        c[512 + NO_RS_LENGTH..512 + NO_RS_LENGTH + 2].copy_from_slice(&0x75bu16.to_le_bytes());
        c
    }

    /// A disk whose sector 0 is a protective MBR with a disk signature.
    fn disk() -> Cursor<Vec<u8>> {
        let mut d = vec![0u8; (FIRST as usize + 2048 + 100) * 512];
        d[3..0x5a].fill(0x42);
        d[0x1b8..0x1bc].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        d[0x1be..0x1ce].copy_from_slice(&[
            0, 0, 2, 0, 0xee, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
        ]);
        d[510] = 0x55;
        d[511] = 0xaa;
        Cursor::new(d)
    }

    #[test]
    fn bios_patches_mbr_and_keeps_the_partition_table() {
        let mut d = disk();
        let before = d.get_ref()[..512].to_vec();
        let boot = boot_img();
        write_bios(&mut d, &boot, &core_img(300), FIRST, 2048).unwrap();
        let mbr = &d.get_ref()[..512];
        assert_eq!(mbr[..3], boot[..3], "jump over the BPB");
        assert_eq!(mbr[BPB], before[BPB], "BPB area is the disk's");
        assert_eq!(mbr[0x5a..0x5c], boot[0x5a..0x5c]);
        assert_eq!(mbr[0x5c..0x64], FIRST.to_le_bytes());
        assert_eq!(mbr[0x64], 0xff);
        assert_eq!(mbr[0x65], boot[0x65]);
        assert_eq!(mbr[0x66..0x68], [0x90, 0x90]);
        assert_eq!(mbr[0x68..0x1b8], boot[0x68..0x1b8]);
        assert_eq!(mbr[0x1b8..0x200], before[0x1b8..0x200], "table kept");
    }

    #[test]
    fn bios_writes_core_with_its_blocklist() {
        let mut d = disk();
        let core = core_img(300);
        write_bios(&mut d, &boot_img(), &core, FIRST, 2048).unwrap();
        let at = FIRST as usize * 512;
        let written = &d.get_ref()[at..at + 300 * 512];
        let list = &written[500..512];
        assert_eq!(list[..8], (FIRST + 1).to_le_bytes());
        assert_eq!(list[8..10], 299u16.to_le_bytes());
        assert_eq!(list[10..12], 0x820u16.to_le_bytes());
        assert!(written[488..500].iter().all(|&b| b == 0), "terminator");
        assert_eq!(written[..488], core[..488]);
        assert_eq!(written[512..core.len()], core[512..]);
        assert!(written[core.len()..].iter().all(|&b| b == 0), "padding");
        // Nothing after the padded core.img is touched.
        assert!(d.get_ref()[at + 300 * 512..].iter().all(|&b| b == 0));
    }

    #[test]
    fn bios_clears_stale_blocklist_entries() {
        let mut core = core_img(10);
        core[488..496].copy_from_slice(&77u64.to_le_bytes());
        core[496..498].copy_from_slice(&3u16.to_le_bytes());
        let patched = patched_core(&core, FIRST, 2048).unwrap();
        assert!(patched[488..500].iter().all(|&b| b == 0));
        assert_eq!(patched[508..510], 9u16.to_le_bytes());
    }

    #[test]
    fn bios_refuses_what_does_not_fit() {
        let boot = boot_img();
        for (core, room) in [(core_img(300), 299), (core_img(900), 2048)] {
            let mut d = disk();
            let pristine = d.get_ref().clone();
            let err = write_bios(&mut d, &boot, &core, FIRST, room).unwrap_err();
            assert!(matches!(err, GrubError::CoreTooLarge { .. }), "{err}");
            assert!(d.get_ref() == &pristine, "nothing written");
        }
        let mut d = disk();
        assert!(matches!(
            write_bios(&mut d, &boot, &core_img(3)[..100], FIRST, 2048),
            Err(GrubError::CoreImage(_))
        ));
        assert!(matches!(
            write_bios(&mut d, &boot[..511], &core_img(3), FIRST, 2048),
            Err(GrubError::BootImage(511))
        ));
        assert!(matches!(
            write_bios(&mut d, &boot, &core_img(3), 0, 2048),
            Err(GrubError::BiosPartition(0))
        ));
        let mut wrong = core_img(3);
        wrong[512 + NO_RS_LENGTH..512 + NO_RS_LENGTH + 2].fill(0xff);
        assert!(matches!(
            write_bios(&mut d, &boot, &wrong, FIRST, 2048),
            Err(GrubError::CoreImage(_))
        ));
        let mut endless = core_img(3);
        let mut at = 512 - LIST_SIZE;
        while at > 0 {
            endless[at + 8] = 1;
            at = at.saturating_sub(LIST_SIZE);
        }
        assert!(matches!(
            write_bios(&mut d, &boot, &endless, FIRST, 2048),
            Err(GrubError::CoreImage(_))
        ));
    }

    #[test]
    fn bios_refuses_a_disk_without_protective_mbr() {
        let mut d = disk();
        d.get_mut()[0x1be + 4] = 0x83;
        let err = write_bios(&mut d, &boot_img(), &core_img(3), FIRST, 2048).unwrap_err();
        assert!(matches!(err, GrubError::NotGpt(_)), "{err}");
        let mut d = disk();
        d.get_mut()[511] = 0;
        let err = write_bios(&mut d, &boot_img(), &core_img(3), FIRST, 2048).unwrap_err();
        assert!(matches!(err, GrubError::NotGpt(_)), "{err}");
    }

    /// The offsets against the boot.img grub-pc-bin installs.
    #[test]
    fn offsets_match_the_real_boot_img() {
        let path = Path::new("/usr/lib/grub/i386-pc/boot.img");
        let Ok(boot) = std::fs::read(path) else {
            slate_testskip::skip(
                "offsets_match_the_real_boot_img",
                slate_testskip::Reason::Tool("grub-pc-bin"),
            );
            return;
        };
        assert_eq!(boot.len(), 512);
        // grub-mkimage's default: core.img right after the MBR.
        assert_eq!(boot[KERNEL_SECTOR..KERNEL_SECTOR + 8], 1u64.to_le_bytes());
        assert_eq!(boot[BOOT_DRIVE], 0xff);
        assert_eq!(boot[DRIVE_CHECK], 0xeb, "a short jmp to NOP out");
        assert_eq!(boot[0], 0xeb, "jmp over the BPB");
        // The jmp at 0 lands right after the boot drive byte: 0x03..0x65 is
        // data (the BPB and the fields setup.c patches), not code.
        assert_eq!(2 + usize::from(boot[1]), BOOT_DRIVE + 1);
        let mut d = disk();
        write_bios(&mut d, &boot, &core_img(3), FIRST, 2048).unwrap();
    }

    #[test]
    fn bios_boot_type_is_the_gpt_guid() {
        // 21686148-6449-6E6F-744E-656564454649: the first three fields
        // little-endian, the rest as written.
        let mut expect = Vec::new();
        expect.extend_from_slice(&0x2168_6148u32.to_le_bytes());
        expect.extend_from_slice(&0x6449u16.to_le_bytes());
        expect.extend_from_slice(&0x6e6fu16.to_le_bytes());
        expect.extend_from_slice(&[0x74, 0x4e, 0x65, 0x65, 0x64, 0x45, 0x46, 0x49]);
        assert_eq!(BIOS_BOOT_TYPE[..], expect[..]);
    }

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn env_round_trip() {
        let v = vars(&[("slate_good", "A"), ("slate_try", "")]);
        let block = render_env(&v).unwrap();
        assert_eq!(block.len(), ENV_SIZE);
        let text = b"# GRUB Environment Block\nslate_good=A\nslate_try=\n";
        assert_eq!(block[..text.len()], text[..]);
        assert!(block[text.len()..].iter().all(|&b| b == b'#'));
        assert_eq!(parse_env(&block).unwrap(), v);
        assert_eq!(
            parse_env(&render_env(&BTreeMap::new()).unwrap()).unwrap(),
            BTreeMap::new()
        );
    }

    #[test]
    fn env_parses_what_grub_writes() {
        // grub-editenv's new file, then escapes, comments and a repeated
        // name (the later one wins, as in GRUB's load_env).
        let mut block = b"# GRUB Environment Block\n\
            # WARNING: Do not edit this file by tools other than grub-editenv!!!\n\
            a=x\\\\y\\\nz\nb=1\n# note\nb=2\n"
            .to_vec();
        block.resize(ENV_SIZE, b'#');
        assert_eq!(
            parse_env(&block).unwrap(),
            vars(&[("a", "x\\y\nz"), ("b", "2")])
        );
    }

    #[test]
    fn env_refuses_bad_blocks() {
        for bad in [
            &b""[..],
            b"# GRUB Environment\n",
            b"# GRUB Environment Block\nnoequals\n",
            b"# GRUB Environment Block\nk=v",
            b"# GRUB Environment Block\nk=v\\",
            b"# GRUB Environment Block\nk=\xff\n",
        ] {
            assert!(
                matches!(parse_env(bad), Err(GrubError::EnvFormat(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn env_refuses_what_it_cannot_write() {
        for v in [
            vars(&[("k", "a\nb")]),
            vars(&[("k", "a\\b")]),
            vars(&[("k", "a\0b")]),
            vars(&[("", "v")]),
            vars(&[("#k", "v")]),
            vars(&[("k=j", "v")]),
            vars(&[("k", &"x".repeat(ENV_SIZE))]),
        ] {
            assert!(
                matches!(render_env(&v), Err(GrubError::EnvContent(_))),
                "{v:?}"
            );
        }
        // Exactly full is fine: the last byte is the newline GRUB needs.
        let fill = ENV_SIZE - ENV_SIGNATURE.len() - "k=\n".len();
        let full = vars(&[("k", &"x".repeat(fill))]);
        assert_eq!(render_env(&full).unwrap()[ENV_SIZE - 1], b'\n');
    }

    #[test]
    fn env_written_in_place() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grubenv");
        std::fs::write(&path, render_env(&BTreeMap::new()).unwrap()).unwrap();
        let inode = std::fs::metadata(&path).unwrap().ino();
        let v = vars(&[("slate_good", "B")]);
        write_env(&path, &v).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode);
        assert_eq!(read_env(&path).unwrap(), v);
        // A file of another size is not one GRUB could rewrite.
        std::fs::write(&path, b"# GRUB Environment Block\n").unwrap();
        assert!(matches!(
            write_env(&path, &v),
            Err(GrubError::EnvContent(_))
        ));
        assert!(matches!(
            write_env(&dir.path().join("missing"), &v),
            Err(GrubError::EnvFile { .. })
        ));
    }

    /// grub-editenv reads what we write, and we read what it writes.
    #[test]
    fn env_agrees_with_grub_editenv() {
        if let Some(why) = slate_testskip::unless_installed(&["grub-editenv"]) {
            slate_testskip::skip("env_agrees_with_grub_editenv", why);
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grubenv");
        let editenv = |args: &[&str]| {
            let out = std::process::Command::new("grub-editenv")
                .arg(&path)
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        std::fs::write(
            &path,
            render_env(&vars(&[("slate_good", "A"), ("slate_try", "B")])).unwrap(),
        )
        .unwrap();
        assert_eq!(editenv(&["list"]), "slate_good=A\nslate_try=B\n");
        editenv(&["set", "slate_try="]);
        editenv(&["set", "other=x y"]);
        let block = std::fs::read(&path).unwrap();
        assert_eq!(block.len(), ENV_SIZE);
        assert_eq!(
            parse_env(&block).unwrap(),
            vars(&[("other", "x y"), ("slate_good", "A"), ("slate_try", "")])
        );
    }

    #[test]
    fn slot_cfg_lines() {
        let cfg = slot_cfg(Slot::A, "console=ttyS0,115200 quiet  panic=-1", true).unwrap();
        assert_eq!(
            cfg,
            "linux /A/vmlinuz console=ttyS0,115200 quiet panic=-1 slate.slot=A\n\
             initrd /A/extensions.cpio /A/initramfs.zst\n"
        );
        let cfg = slot_cfg(Slot::B, "", false).unwrap();
        assert_eq!(
            cfg,
            "linux /B/vmlinuz slate.slot=B\ninitrd /B/initramfs.zst\n"
        );
    }

    #[test]
    fn slot_cfg_quotes_what_grub_would_expand() {
        let cfg = slot_cfg(Slot::A, "a=$x b=\"c d\" it's;", false).unwrap();
        assert!(
            cfg.starts_with("linux /A/vmlinuz 'a=$x' 'b=\"c' 'd\"' 'it'\\''s;' slate.slot=A\n"),
            "{cfg}"
        );
        assert!(matches!(
            slot_cfg(Slot::A, "a\nreboot", false),
            Err(GrubError::Cmdline(_))
        ));
    }

    /// GRUB's own parser accepts the scripts.
    #[test]
    fn scripts_pass_grub_script_check() {
        if let Some(why) = slate_testskip::unless_installed(&["grub-script-check"]) {
            slate_testskip::skip("scripts_pass_grub_script_check", why);
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let scripts = [
            grub_cfg(),
            slot_cfg(Slot::B, "console=ttyS0 x='y' $z", true).unwrap(),
        ];
        for (i, script) in scripts.iter().enumerate() {
            let path = dir.path().join(format!("{i}.cfg"));
            std::fs::write(&path, script).unwrap();
            let out = std::process::Command::new("grub-script-check")
                .arg(&path)
                .output()
                .unwrap();
            assert!(out.status.success(), "{script}\n{out:?}");
        }
    }

    #[test]
    fn grub_cfg_one_shot_order() {
        let cfg = grub_cfg();
        let at = |s: &str| cfg.find(s).unwrap_or_else(|| panic!("{s} missing"));
        assert!(at("load_env -f $prefix/grubenv slate_good slate_try") < at("set slate_try="));
        assert!(at("set slate_try=") < at("save_env -f $prefix/grubenv slate_try"));
        assert!(at("save_env") < at("set fallback=$default"));
        // Entry numbers match the order of the entries.
        assert!(at("--id A") < at("--id B"));
        assert!(cfg.contains("source /A/boot.cfg") && cfg.contains("source /B/boot.cfg"));
    }
}
