//! Several Slate VMs on one private LAN: the multi-node tests and
//! `make cluster` share this.
//!
//! Each VM has two NICs: eth0 on QEMU's user network (DHCP; apid and etcd
//! forwarded from host loopback) and eth1 on the LAN `10.5.0.0/24`, where
//! node N is `10.5.0.(N+1)`. The LAN is a [`Hub`] in this process: QEMU
//! sends each frame as a UDP datagram to the hub, which repeats it to
//! every other VM. It needs no root, no bridge and no multicast, so it
//! runs the same on a laptop and in CI, and it goes away with the process.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use slate_config::Interface;
use slate_config::generate::{self, Bundle, Options};

use crate::qemu::{Boot, Lan, Vm, VmOptions};

/// A repeater for Ethernet frames carried in UDP between QEMU processes.
pub struct Hub {
    /// The hub's port for VM i.
    ports: Vec<u16>,
    /// VM i's own port, set by [`Vm::start`] for each QEMU (0: none yet).
    vm_ports: Vec<Arc<AtomicU16>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Hub {
    /// A hub with `n` ports, one per VM.
    pub fn start(n: usize) -> anyhow::Result<Self> {
        let mut sockets = Vec::new();
        let mut ports = Vec::new();
        for _ in 0..n {
            let socket = UdpSocket::bind("127.0.0.1:0").context("binding a hub port")?;
            socket.set_read_timeout(Some(Duration::from_millis(200)))?;
            ports.push(socket.local_addr()?.port());
            sockets.push(socket);
        }
        let vm_ports: Vec<_> = (0..n).map(|_| Arc::new(AtomicU16::new(0))).collect();
        let sockets = Arc::new(sockets);
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|i| {
                let (sockets, stop, vm_ports) = (sockets.clone(), stop.clone(), vm_ports.clone());
                std::thread::spawn(move || repeat(i, &sockets, &vm_ports, &stop))
            })
            .collect();
        Ok(Self {
            ports,
            vm_ports,
            stop,
            threads,
        })
    }

    /// VM `i`'s side of the hub, with a MAC address of its own.
    pub fn lan(&self, i: usize) -> Lan {
        Lan {
            hub: self.ports[i],
            local: self.vm_ports[i].clone(),
            mac: format!("52:54:00:5a:00:{:02x}", i + 1),
        }
    }
}

/// Repeats every frame VM `i` sends to every other VM.
fn repeat(i: usize, sockets: &[UdpSocket], vm_ports: &[Arc<AtomicU16>], stop: &AtomicBool) {
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let Ok(n) = sockets[i].recv(&mut buf) else {
            continue;
        };
        for (j, vm_port) in vm_ports.iter().enumerate() {
            let vm_port = vm_port.load(Ordering::Relaxed);
            if j != i && vm_port != 0 {
                let to = SocketAddr::from((Ipv4Addr::LOCALHOST, vm_port));
                // A VM that is down drops the frame, as a cable would.
                let _ = sockets[j].send_to(&buf[..n], to);
            }
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The LAN address of node `i` (0-based): 10.5.0.2, 10.5.0.3, …
pub fn lan_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 5, 0, u8::try_from(i + 2).unwrap_or(254))
}

/// A VM's links: eth0 on QEMU's user network by DHCP, eth1 on a private
/// LAN with `address` (CIDR).
pub fn uplink_and_lan(address: &str) -> Vec<Interface> {
    vec![
        Interface {
            interface: Some("eth0".into()),
            dhcp: true,
            ..Interface::default()
        },
        Interface {
            interface: Some("eth1".into()),
            addresses: vec![address.into()],
            ..Interface::default()
        },
    ]
}

/// The LAN, for `validSubnets`.
pub const LAN: &str = "10.5.0.0/24";

/// One node of a [`Cluster`].
pub struct ClusterNode {
    pub name: String,
    pub ip: Ipv4Addr,
    pub opts: VmOptions,
    /// Running, or None while powered off.
    pub vm: Option<Vm>,
    boots: u32,
}

/// N control-plane nodes on one LAN, each with a system disk and a config
/// drive of its own, all from one generated cluster.
pub struct Cluster {
    pub dir: PathBuf,
    pub bundle: Bundle,
    /// The admin's client config (`--config`).
    pub slateconfig: PathBuf,
    pub nodes: Vec<ClusterNode>,
    _hub: Hub,
}

impl Cluster {
    /// Writes the configs, drives and disks of `n` nodes into `dir`;
    /// nothing runs yet. The Kubernetes endpoint is node 1's LAN address,
    /// as in a cluster without a load balancer.
    pub fn create(n: usize, dir: &Path, boot: &Boot) -> anyhow::Result<Self> {
        Self::create_with_workers(n, 0, dir, boot)
    }

    /// [`Cluster::create`] with `workers` worker nodes after the `n`
    /// control-plane ones (`worker-1`, …), configured with the generated
    /// worker config: no machine CA key, their API certificates signed by
    /// node 1's trust service.
    pub fn create_with_workers(
        n: usize,
        workers: usize,
        dir: &Path,
        boot: &Boot,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let bundle = generate::generate(&Options {
            cluster_name: "slate-cluster".into(),
            endpoint: format!("https://{}:6443", lan_ip(0)),
            additional_sans: vec!["127.0.0.1".into()],
            client_endpoints: vec![],
            install_disk: None,
            secrets: None,
        })?;
        let slateconfig = dir.join("slateconfig");
        bundle.client.save(&slateconfig)?;
        let hub = Hub::start(n + workers)?;
        let mut nodes = Vec::new();
        for i in 0..n + workers {
            let (name, mut config) = if i < n {
                (format!("cp-{}", i + 1), bundle.controlplane.clone())
            } else {
                (format!("worker-{}", i - n + 1), bundle.worker.clone())
            };
            let ip = lan_ip(i);
            config.machine.network.hostname = Some(name.clone());
            config.machine.network.interfaces = uplink_and_lan(&format!("{ip}/24"));
            // etcd and kubelet advertise the LAN, not QEMU's user network
            // (10.0.2.15 on every VM).
            config.machine.kubelet.node_ip.valid_subnets = vec![LAN.into()];
            let drive = dir.join(format!("{name}-cidata.iso"));
            crate::configdrive::build(&config.to_yaml()?, &drive)?;
            let disk = dir.join(format!("{name}-system.raw"));
            crate::qemu::blank_disk(&disk)?;
            let mut opts = VmOptions::new(boot.clone());
            opts.config_drive = Some(drive);
            opts.system_disk = Some(disk);
            // One vCPU each: three TCG guests share two host cores.
            opts.cpus = 1;
            opts.lan = Some(hub.lan(i));
            opts.forwards = vec![2379];
            nodes.push(ClusterNode {
                name,
                ip,
                opts,
                vm: None,
                boots: 0,
            });
        }
        Ok(Self {
            dir: dir.to_owned(),
            bundle,
            slateconfig,
            nodes,
            _hub: hub,
        })
    }

    /// Powers node `i` on; its console goes to `DIR/NAME-console-BOOT.log`.
    pub fn start(&mut self, i: usize) -> anyhow::Result<&mut Vm> {
        let node = &mut self.nodes[i];
        node.boots += 1;
        let console = self
            .dir
            .join(format!("{}-console-{}.log", node.name, node.boots));
        let vm = Vm::start(&node.opts, Some(&console))?;
        Ok(node.vm.insert(vm))
    }

    /// Node `i` after it rebooted (QEMU ends under `-no-reboot`): started
    /// again from its installed disk, on the same host ports, as a real
    /// node comes back on its address.
    pub fn restart_from_disk(&mut self, i: usize) -> anyhow::Result<&mut Vm> {
        let node = &mut self.nodes[i];
        if let Some(vm) = &node.vm {
            node.opts.ports = Some((vm.api_port, vm.forwarded.clone()));
        }
        node.opts.boot = crate::qemu::Boot::Disk { uefi: false };
        node.vm = None;
        self.start(i)
    }

    /// Cuts node `i`'s power (QEMU killed): no shutdown, as a power cut.
    pub fn power_off(&mut self, i: usize) {
        self.nodes[i].vm = None;
    }

    pub fn vm(&mut self, i: usize) -> &mut Vm {
        self.nodes[i].vm.as_mut().expect("the node is powered off")
    }

    /// apid of node `i`, as slatectl's `-n` takes it.
    pub fn endpoint(&self, i: usize) -> String {
        self.nodes[i]
            .vm
            .as_ref()
            .map(Vm::endpoint)
            .unwrap_or_default()
    }

    /// etcd's client URL of node `i` through its host forward.
    pub fn etcd_url(&self, i: usize) -> Option<String> {
        let vm = self.nodes[i].vm.as_ref()?;
        vm.forwarded
            .iter()
            .find(|(guest, _)| *guest == 2379)
            .map(|(_, host)| format!("https://127.0.0.1:{host}"))
    }

    /// A client certificate of the cluster's etcd CA for `etcdctl`, written
    /// to `DIR/etcdctl/`: (CA, certificate, key).
    pub fn etcdctl_identity(&self) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
        let ca = self
            .bundle
            .controlplane
            .cluster
            .etcd
            .ca
            .as_ref()
            .context("the bundle has no etcd CA")?;
        let (crt, key) = (
            ca.crt_pem()?,
            ca.key_pem()?.context("the etcd CA has no key")?,
        );
        let client = slate_pki::Authority::from_pem(&crt, &key)?.issue_etcd_client("etcdctl")?;
        let dir = self.dir.join("etcdctl");
        std::fs::create_dir_all(&dir)?;
        let paths = (
            dir.join("ca.crt"),
            dir.join("client.crt"),
            dir.join("client.key"),
        );
        std::fs::write(&paths.0, crt)?;
        std::fs::write(&paths.1, client.cert_pem)?;
        slate_common::fs::write_atomic(&paths.2, client.key_pem.as_bytes(), 0o600)?;
        Ok(paths)
    }
}
