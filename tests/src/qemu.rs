//! One Slate VM under QEMU.
//!
//! TCG is the default: on the machines this project runs on, `/dev/kvm` is
//! a paravirtual shim on which stock kernels hang. `SLATE_ACCEL=kvm` opts in
//! to KVM on real hardware.
//!
//! QEMU's user network accepts a forwarded connection before the guest
//! listens and then drops it (and replays it for a long time if the guest
//! has no address yet), so callers wait for apid's ready line on the
//! console before they connect, then probe one connection at a time.

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::artifacts::Artifacts;

/// What the VM boots.
#[derive(Debug, Clone)]
pub enum Boot {
    /// `-kernel`/`-initrd`/`-append`: no firmware menu, no GRUB.
    Kernel {
        vmlinuz: PathBuf,
        initramfs: PathBuf,
        cmdline: String,
    },
    /// The hybrid ISO through SeaBIOS (BIOS) or OVMF (UEFI) and GRUB.
    Iso { iso: PathBuf, uefi: bool },
    /// The hybrid ISO written to a USB stick, as the kernel sees one: a
    /// read-only disk before the system disk. Debian's cloud kernel has no
    /// AHCI driver, so a q35 CD-ROM is invisible to it once booted, and
    /// installing needs the medium.
    Stick { iso: PathBuf, uefi: bool },
    /// The system disk alone (`VmOptions::system_disk`), installed: the
    /// firmware finds GRUB on it.
    Disk { uefi: bool },
}

impl Boot {
    pub fn kernel(a: &Artifacts) -> Self {
        Self::Kernel {
            vmlinuz: a.vmlinuz.clone(),
            initramfs: a.initramfs.clone(),
            cmdline: a.cmdline.clone(),
        }
    }

    /// Direct kernel boot with the extension layer (containerd, runc, etcd).
    pub fn kernel_with_extensions(a: &Artifacts) -> anyhow::Result<Self> {
        Ok(Self::Kernel {
            vmlinuz: a.vmlinuz.clone(),
            initramfs: a.initramfs_with_extensions()?,
            cmdline: a.cmdline.clone(),
        })
    }
}

/// Where OVMF lives on Debian (package `ovmf`).
pub const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

#[derive(Debug, Clone)]
pub struct VmOptions {
    pub boot: Boot,
    /// A config drive image attached as a virtio disk.
    pub config_drive: Option<PathBuf>,
    /// A raw image attached as the first virtio disk (`/dev/vda`): the
    /// system disk, where machined keeps STATE.
    pub system_disk: Option<PathBuf>,
    pub memory_mib: u32,
    /// vCPUs: 2 by default, the smallest shape clouds offer;
    /// `SLATE_SMP` overrides it.
    pub cpus: u32,
    /// Extra kernel arguments (kernel boot only).
    pub extra_cmdline: Option<String>,
    /// virtio NICs `nic0`, `nic1`, … (the guest's eth0, eth1, …); with
    /// more than one they share QEMU's user network through a hub, as two
    /// ports of a server on one switch.
    pub nics: u32,
    /// A QEMU human monitor on this Unix socket, for [`Vm::monitor`].
    pub monitor: Option<PathBuf>,
    /// A second NIC (the guest's last ethN) on a private LAN between VMs:
    /// its frames go as UDP datagrams to a [`crate::cluster::Hub`] port.
    pub lan: Option<Lan>,
    /// More guest TCP ports forwarded from host loopback (etcd's 2379):
    /// each gets a free host port, listed in [`Vm::forwarded`].
    pub forwards: Vec<u16>,
    /// Host ports to forward again (apid's, then `forwards`'): a node that
    /// reboots keeps its address, and a client waiting for it finds it.
    /// New ones are picked if these are taken meanwhile.
    pub ports: Option<(u16, Vec<(u16, u16)>)>,
    /// A NIC (the guest's last ethN) on a host tap device of this name,
    /// which QEMU creates (root only); the test may move it into a
    /// namespace.
    pub tap: Option<String>,
}

/// A VM's port on a private LAN: QEMU sends its frames to `hub` and
/// receives on `local` (both on 127.0.0.1). [`Vm::start`] picks `local`
/// afresh for each QEMU it starts and stores it here, where the hub reads
/// it, so a port taken meanwhile costs a retry, not the test.
#[derive(Debug, Clone)]
pub struct Lan {
    pub hub: u16,
    pub local: Arc<AtomicU16>,
    pub mac: String,
}

impl VmOptions {
    pub fn new(boot: Boot) -> Self {
        Self {
            boot,
            config_drive: None,
            system_disk: None,
            memory_mib: 1024,
            cpus: default_cpus(),
            extra_cmdline: None,
            nics: 1,
            monitor: None,
            lan: None,
            forwards: Vec::new(),
            ports: None,
            tap: None,
        }
    }
}

/// A running VM; dropping it kills QEMU.
pub struct Vm {
    child: Child,
    /// Host loopback port forwarded to apid's 50000 in the guest.
    pub api_port: u16,
    /// (guest port, host loopback port) of [`VmOptions::forwards`].
    pub forwarded: Vec<(u16, u16)>,
    pub console: PathBuf,
    /// QEMU's own messages (why it would not start, or why it stopped).
    stderr: PathBuf,
    /// When QEMU was started.
    pub started: Instant,
    monitor: Option<PathBuf>,
    _dir: Option<tempfile::TempDir>,
    /// What it was started with, for [`Vm::restart`].
    opts: VmOptions,
}

/// Creates `path` as a sparse 2 GiB system disk, blank as a fresh cloud
/// VM's.
pub fn blank_disk(path: &Path) -> anyhow::Result<()> {
    std::fs::File::create(path)
        .and_then(|f| f.set_len(2 << 30))
        .with_context(|| format!("creating {}", path.display()))
}

pub fn free_port() -> anyhow::Result<u16> {
    // Bind port 0 and release it; QEMU binds it right after. Another
    // process (or the next VM's pick) may take it in between: QEMU then
    // exits at once and [`Vm::start`] tries again with new ports.
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// [`free_port`] for UDP (a VM's side of a [`Lan`]).
pub fn free_udp_port() -> anyhow::Result<u16> {
    let socket = UdpSocket::bind("127.0.0.1:0").context("finding a free UDP port")?;
    Ok(socket.local_addr()?.port())
}

/// How many times [`Vm::start`] tries new host ports when QEMU cannot
/// bind the ones it was given.
const START_ATTEMPTS: u32 = 4;
/// How long [`Vm::start`] watches a new QEMU for an early exit: it binds
/// its ports before the guest runs, so a guest that prints anything, or a
/// QEMU still running after this, got them.
const START_WATCH: Duration = Duration::from_secs(2);

/// True if QEMU's messages say a host port it was given was taken.
fn port_was_taken(stderr: &str) -> bool {
    ["host forwarding rule", "Address already in use", "bind"]
        .iter()
        .any(|m| stderr.contains(m))
}

fn default_cpus() -> u32 {
    std::env::var("SLATE_SMP")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(2)
}

/// `-accel` for this run: TCG unless `SLATE_ACCEL` says otherwise.
pub fn accel() -> String {
    std::env::var("SLATE_ACCEL")
        .ok()
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| "tcg".to_owned())
}

/// The QEMU command line for `opts`, forwarding host `127.0.0.1:api_port`
/// to apid and sending the serial console to `serial` (`file:PATH`, `stdio`).
pub fn command(opts: &VmOptions, api_port: u16, serial: &str) -> Command {
    command_with_forwards(opts, api_port, &[], serial)
}

/// [`command`] with more (guest port, host port) forwards.
pub fn command_with_forwards(
    opts: &VmOptions,
    api_port: u16,
    forwards: &[(u16, u16)],
    serial: &str,
) -> Command {
    let mut user = format!("user,id=net0,hostfwd=tcp:127.0.0.1:{api_port}-:50000");
    for (guest, host) in forwards {
        user.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
    }
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-M",
        "q35",
        "-accel",
        &accel(),
        "-m",
        &opts.memory_mib.to_string(),
        "-smp",
        &opts.cpus.to_string(),
    ])
    .args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ])
    .args(["-serial", serial])
    .args(["-netdev", &user]);
    if opts.nics <= 1 {
        cmd.args(["-device", "virtio-net-pci,netdev=net0,id=nic0"]);
    } else {
        cmd.args(["-netdev", "hubport,id=uplink,hubid=0,netdev=net0"]);
        for i in 0..opts.nics {
            cmd.args(["-netdev", &format!("hubport,id=port{i},hubid=0")])
                .args([
                    "-device",
                    &format!("virtio-net-pci,netdev=port{i},id=nic{i}"),
                ]);
        }
    }
    if let Some(lan) = &opts.lan {
        cmd.args([
            "-netdev",
            &format!(
                "socket,id=lan,udp=127.0.0.1:{},localaddr=127.0.0.1:{}",
                lan.hub,
                lan.local.load(Ordering::Relaxed)
            ),
            "-device",
            &format!("virtio-net-pci,netdev=lan,id=lan0,mac={}", lan.mac),
        ]);
    }
    if let Some(tap) = &opts.tap {
        cmd.args([
            "-netdev",
            &format!("tap,id=tap,ifname={tap},script=no,downscript=no"),
            "-device",
            "virtio-net-pci,netdev=tap,id=tap0,mac=52:54:00:6e:77:02",
        ]);
    }
    if let Some(monitor) = &opts.monitor {
        cmd.arg("-monitor")
            .arg(format!("unix:{},server=on,wait=off", monitor.display()));
    }
    // Clouds give VMs an RNG (virtio-rng or RDRAND); without one the
    // guest's key generation waits for the kernel to gather entropy.
    cmd.args(["-device", "virtio-rng-pci"]);
    match &opts.boot {
        Boot::Kernel {
            vmlinuz,
            initramfs,
            cmdline,
        } => {
            let mut append = cmdline.clone();
            if let Some(extra) = &opts.extra_cmdline {
                append.push(' ');
                append.push_str(extra);
            }
            cmd.arg("-kernel")
                .arg(vmlinuz)
                .arg("-initrd")
                .arg(initramfs)
                .arg("-append")
                .arg(append);
        }
        Boot::Iso { iso, uefi } => {
            if *uefi {
                cmd.args(["-bios", OVMF]);
            }
            cmd.arg("-drive").arg(format!(
                "file={},media=cdrom,readonly=on,if=ide",
                iso.display()
            ));
            cmd.args(["-boot", "d"]);
        }
        Boot::Stick { iso, uefi } => {
            if *uefi {
                cmd.args(["-bios", OVMF]);
            }
            cmd.arg("-drive").arg(format!(
                "file={},if=virtio,format=raw,readonly=on",
                iso.display()
            ));
        }
        Boot::Disk { uefi } => {
            if *uefi {
                cmd.args(["-bios", OVMF]);
            }
        }
    }
    if let Some(disk) = &opts.system_disk {
        cmd.arg("-drive")
            .arg(format!("file={},if=virtio,format=raw", disk.display()));
    }
    if let Some(drive) = &opts.config_drive {
        cmd.arg("-drive").arg(format!(
            "file={},if=virtio,format=raw,readonly=on",
            drive.display()
        ));
    }
    cmd
}

impl Vm {
    /// Starts QEMU. The console goes to `console` if given, else to a file
    /// in a temporary directory owned by the VM.
    pub fn start(opts: &VmOptions, console: Option<&Path>) -> anyhow::Result<Self> {
        let (dir, console) = match console {
            Some(p) => (None, p.to_owned()),
            None => {
                let dir = tempfile::tempdir().context("creating the VM's directory")?;
                let path = dir.path().join("console.log");
                (Some(dir), path)
            }
        };
        let stderr = PathBuf::from(format!("{}.qemu-stderr", console.display()));
        let mut attempt = 1;
        loop {
            let (api_port, forwarded) = match &opts.ports {
                Some((api, forwarded)) if attempt == 1 => (*api, forwarded.clone()),
                _ => (
                    free_port()?,
                    opts.forwards
                        .iter()
                        .map(|guest| Ok((*guest, free_port()?)))
                        .collect::<anyhow::Result<Vec<_>>>()?,
                ),
            };
            if let Some(lan) = &opts.lan {
                lan.local.store(free_udp_port()?, Ordering::Relaxed);
            }
            let mut cmd = command_with_forwards(
                opts,
                api_port,
                &forwarded,
                &format!("file:{}", console.display()),
            );
            let errors = std::fs::File::create(&stderr)
                .with_context(|| format!("creating {}", stderr.display()))?;
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(errors);
            let child = cmd.spawn().context(
                "starting qemu-system-x86_64 (install qemu-system-x86, or run `make deps`)",
            )?;
            let mut vm = Self {
                child,
                api_port,
                forwarded,
                console: console.clone(),
                stderr: stderr.clone(),
                started: Instant::now(),
                monitor: opts.monitor.clone(),
                _dir: None,
                opts: opts.clone(),
            };
            if vm.got_its_ports() {
                vm._dir = dir;
                return Ok(vm);
            }
            let report = vm.exit_report();
            if attempt >= START_ATTEMPTS || !port_was_taken(&report) {
                anyhow::bail!("QEMU did not start: {report}");
            }
            eprintln!("QEMU could not bind its ports ({report}); trying new ones");
            attempt += 1;
        }
    }

    /// Watches a new QEMU until the guest prints or [`START_WATCH`] has
    /// passed; false if QEMU exited first.
    fn got_its_ports(&mut self) -> bool {
        let until = Instant::now() + START_WATCH;
        while Instant::now() < until {
            if !self.is_running() {
                return false;
            }
            let printed = std::fs::metadata(&self.console).is_ok_and(|m| m.len() > 0);
            if printed {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Why QEMU stopped: its exit status and what it printed, for errors.
    pub fn exit_report(&mut self) -> String {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => status.to_string(),
            Ok(None) => "still running".into(),
            Err(e) => format!("unknown ({e})"),
        };
        let said = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let said = said.trim();
        if said.is_empty() {
            format!("QEMU {status}, printing nothing")
        } else {
            format!("QEMU {status}: {said}")
        }
    }

    /// Runs one QEMU monitor command (e.g. `set_link nic0 off`) and
    /// returns its output; needs [`VmOptions::monitor`].
    pub fn monitor(&self, command: &str) -> anyhow::Result<String> {
        use std::io::{Read as _, Write as _};
        let path = self
            .monitor
            .as_ref()
            .context("the VM was started without a monitor socket")?;
        let mut stream = std::os::unix::net::UnixStream::connect(path)
            .with_context(|| format!("connecting to QEMU's monitor {}", path.display()))?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        // The banner ends in a prompt; the command's output ends in the next.
        let mut out = Vec::new();
        let mut prompts = 0;
        let mut buf = [0u8; 1024];
        let mut sent = false;
        while prompts < 2 {
            let n = stream.read(&mut buf).context("reading QEMU's monitor")?;
            anyhow::ensure!(n > 0, "QEMU's monitor closed");
            out.extend_from_slice(&buf[..n]);
            prompts = String::from_utf8_lossy(&out).matches("(qemu)").count();
            if prompts >= 1 && !sent {
                stream.write_all(format!("{command}\n").as_bytes())?;
                sent = true;
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// The apid endpoint as slatectl takes it.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.api_port)
    }

    /// The last lines of the console, to show when a test fails.
    pub fn console_tail(&self, n: usize) -> String {
        crate::console::tail(&self.console, n)
    }

    /// Waits until a console line contains `needle` and returns it; fails,
    /// with the last `tail` console lines, at `deadline` or if QEMU exits.
    pub async fn wait_for_line(
        &mut self,
        needle: &str,
        deadline: Instant,
        tail: usize,
    ) -> anyhow::Result<String> {
        loop {
            if let Some(line) = crate::console::find_line(&self.console, needle) {
                return Ok(line);
            }
            if !self.is_running() {
                anyhow::bail!(
                    "no console line with {needle:?} before {}; console:\n{}",
                    self.exit_report(),
                    self.console_tail(tail)
                );
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "no console line with {needle:?}; console:\n{}",
                    self.console_tail(tail)
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Whether the guest's kernel says its vCPUs were not run for tens of
    /// seconds (RCU stalls, soft lockups): on these shared 2-core hosts a
    /// TCG guest was seen starved that way within seconds of boot, in
    /// tests that pass on every other run.
    pub fn starved(&self) -> bool {
        ["rcu_preempt detected stalls", "watchdog: BUG: soft lockup"]
            .iter()
            .any(|s| crate::console::find_line(&self.console, s).is_some())
    }

    /// Starts the guest again with the same options, disks, console file
    /// and host ports; the stalled console is kept beside it
    /// (`<console>.stalled`) for whoever looks into it.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let kept = PathBuf::from(format!("{}.stalled", self.console.display()));
        let _ = std::fs::copy(&self.console, kept);
        let mut opts = self.opts.clone();
        opts.ports = Some((self.api_port, self.forwarded.clone()));
        let dir = self._dir.take();
        let mut fresh = Vm::start(&opts, Some(&self.console))?;
        fresh._dir = dir;
        *self = fresh;
        Ok(())
    }

    /// [`Vm::wait_for_line`] for a line of the boot, restarting the guest
    /// once if the host starved it before then ([`Vm::starved`]). A stall
    /// that comes back is a failure like any other.
    pub async fn wait_for_boot_line(
        &mut self,
        needle: &str,
        deadline: Instant,
        tail: usize,
    ) -> anyhow::Result<String> {
        let mut restarted = false;
        loop {
            if let Some(line) = crate::console::find_line(&self.console, needle) {
                return Ok(line);
            }
            if !restarted && self.is_running() && self.starved() {
                eprintln!(
                    "the guest stalled before {needle:?} (RCU stall or soft lockup): restarting it once; its console is kept in {}.stalled",
                    self.console.display()
                );
                self.restart()?;
                restarted = true;
                continue;
            }
            if !self.is_running() || Instant::now() >= deadline {
                return self.wait_for_line(needle, Instant::now(), tail).await;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Waits until QEMU exits (the guest powered off or, with
    /// `-no-reboot`, rebooted); false if it still runs at `deadline`.
    pub async fn wait_for_exit(&mut self, deadline: Instant) -> bool {
        while Instant::now() < deadline {
            if !self.is_running() {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        false
    }

    /// True while QEMU runs (the guest has not powered off).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Vm {
    /// The power cut: QEMU killed (SIGKILL) and waited for, so its disks
    /// are free for the next VM.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}
