//! Kernel module selection: `modules.dep` parsing, dependency closure in
//! load order, the stage-1 (initramfs) set and the root-image allow-list.
//!
//! Debian's module tree is ~90 MB (cloud) to ~390 MB (generic), while the
//! root image must stay under 10 MB. So the root image ships an allow-list of
//! what a Kubernetes node needs, closed over `modules.dep`; see docs/image.md
//! for the reasoning behind each entry.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::KernelFlavor;

/// Modules stage 1 loads before it can mount the root image and reach the
/// network, for every flavour. Names missing from a kernel are skipped (some
/// are built in, `virtio_console` is optional).
pub const STAGE1_COMMON: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    // apid generates its keys at boot, and getrandom() blocks until the
    // kernel's CRNG is seeded; on VMs without RDRAND (QEMU's default CPU)
    // that took over 10 s. A virtio RNG seeds it at once.
    "virtio_rng",
    "loop",
    "squashfs",
    "isofs",
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "nls_utf8",
];

/// Loaded by init in stage 2 from the root image, at idle priority while
/// the daemons start: not needed to mount the root, reach the network or
/// read a config drive, and ~60 ms of module initialisation under
/// emulation that would otherwise delay the API (docs/boot-time.md).
pub const LATE: &[&str] = &["virtio_scsi", "virtio_console", "overlay"];

/// The link drivers networkd creates links with (VLAN, dummy, bridge,
/// bond; bonding is ~150 KB compressed and clouds' VMs may bond too;
/// wireguard for the mesh's kernel datapath, with udp_tunnel and the
/// curve25519/chacha20poly1305 libraries it depends on; tun for its
/// default, userspace datapath, whose /dev/net/tun appears only once the
/// module is in), and br_netfilter, which kubelet requires (pods' bridged traffic through
/// iptables): the
/// image has no modprobe, so the kernel cannot load them on demand. init
/// loads them once the node has an address, after the boot's critical
/// path (they cost ~150 ms of CPU under emulation, docs/boot-time.md).
pub const LINK_DRIVERS: &[&str] = &[
    "8021q",
    "dummy",
    "bridge",
    "bonding",
    "br_netfilter",
    "wireguard",
    "tun",
];

/// Bare-metal disk controllers and common NICs, added for `--kernel metal`.
pub const STAGE1_METAL: &[&str] = &[
    "ahci", "ata_piix", "sd_mod", "sr_mod", "nvme", "e1000", "e1000e", "igb", "ixgbe", "r8169",
];

/// What the root image carries beyond stage 1. An entry ending in `/` is a
/// directory under `kernel/` (every module in it); `!name` or `!dir/`
/// removes modules that a directory entry brought in (a module that is still
/// a dependency of something shipped comes back through `modules.dep`);
/// anything else is a module name. See docs/image.md for the budget.
pub const ROOTFS_ALLOW: &[&str] = &[
    // Packet filtering: nf_tables, iptables-nft's xt_* matches, conntrack,
    // NAT, IPVS (kube-proxy ipvs mode) and ipset. CNIs and kube-proxy load
    // an unpredictable subset, so the directories go in whole, minus the
    // legacy protocol helpers and LSM/IPsec/hardware odds and ends below.
    "net/netfilter/",
    "net/ipv4/netfilter/",
    "net/ipv6/netfilter/",
    "!nf_conntrack_amanda",
    "!nf_conntrack_broadcast",
    "!nf_conntrack_ftp",
    "!nf_conntrack_h323",
    "!nf_conntrack_irc",
    "!nf_conntrack_netbios_ns",
    "!nf_conntrack_pptp",
    "!nf_conntrack_sane",
    "!nf_conntrack_sip",
    "!nf_conntrack_snmp",
    "!nf_conntrack_tftp",
    "!nf_nat_amanda",
    "!nf_nat_ftp",
    "!nf_nat_irc",
    "!nf_nat_sip",
    "!nf_nat_tftp",
    "!nf_nat_h323",
    "!nf_nat_pptp",
    "!nf_nat_snmp_basic",
    "!ip_vs_ftp",
    "!ip_vs_pe_sip",
    "!nfnetlink_osf",
    "!nft_osf",
    "!xt_osf",
    "!xt_LED",
    "!xt_AUDIT",
    "!xt_SECMARK",
    "!xt_CONNSECMARK",
    "!xt_l2tp",
    "!xt_ipcomp",
    "!xt_dccp",
    "!xt_TEE",
    "!nf_dup_ipv4",
    "!nf_dup_ipv6",
    "!xt_cluster",
    "!nf_synproxy_core",
    "!nft_synproxy",
    "!ipt_SYNPROXY",
    "!ip6t_SYNPROXY",
    "!xt_SYNPROXY",
    "!nft_xfrm",
    "!arptable_filter",
    "!arp_tables",
    "!arpt_mangle",
    // Bridge + br_netfilter (bridged pod traffic through iptables), ebtables.
    "net/bridge/",
    // Traffic control used by CNIs (bandwidth plugin, Cilium/Calico eBPF).
    "sch_htb",
    "sch_ingress",
    "sch_fq_codel",
    "sch_fq",
    "sch_prio",
    "sch_tbf",
    "cls_bpf",
    "cls_u32",
    "cls_fw",
    "cls_matchall",
    "act_bpf",
    "act_mirred",
    "act_gact",
    // Overlay and virtual links: the WireGuard mesh, VXLAN/Geneve/IPIP
    // overlays of Flannel/Calico/Cilium, veth pairs, VLANs, tun.
    "wireguard",
    "vxlan",
    "geneve",
    "ipip",
    "ip_gre",
    "ip6_tunnel",
    "sit",
    "veth",
    "tun",
    "dummy",
    "macvlan",
    "ipvlan",
    "8021q",
    // Filesystems: ext4 for EPHEMERAL/STATE (the only one machined makes),
    // vfat for EFI, isofs for the install medium, overlay for containerd.
    // Left out: xfs (4.2 MB, 1.2 MB of the squashfs; nothing on the node
    // makes or mounts one) and fuse (400 KB; neither containerd's default
    // snapshotter nor kubelet needs it).
    "ext4",
    "vfat",
    "isofs",
    "overlay",
    "squashfs",
    "nls_iso8859_1",
    // Device mapper and dm-crypt (encrypted STATE/EPHEMERAL).
    "dm_mod",
    "dm_crypt",
    // Crypto algorithms requested by name at run time (not via modules.dep)
    // by dm-crypt and AF_ALG users.
    "xts",
    "aesni_intel",
    "sha256_ssse3",
    "crc32c_intel",
    "af_alg",
    "algif_skcipher",
    "algif_hash",
    // Virtualisation guests.
    "drivers/virtio/",
    "virtio_rng",
    "vmw_vsock_virtio_transport",
];

/// The stage-1 names for a flavour.
pub fn stage1(flavor: KernelFlavor) -> Vec<&'static str> {
    let mut names = STAGE1_COMMON.to_vec();
    if flavor == KernelFlavor::Metal {
        names.extend_from_slice(STAGE1_METAL);
    }
    names
}

/// The root-image allow-list for a flavour (stage 1 included: after
/// switch_root the same modules must be loadable from the new root).
pub fn rootfs_allow(flavor: KernelFlavor) -> Vec<&'static str> {
    let mut names = stage1(flavor);
    names.extend_from_slice(LATE);
    names.extend_from_slice(LINK_DRIVERS);
    names.extend_from_slice(ROOTFS_ALLOW);
    names
}

/// A malformed or inconsistent `modules.dep`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModulesError {
    #[error("modules.dep line {line}: no `:` in {text:?}")]
    Syntax { line: usize, text: String },
    #[error("modules.dep: {module} depends on {dependency}, which has no entry")]
    Dangling { module: String, dependency: String },
    #[error("modules.dep: dependency cycle {}", .0.join(" -> "))]
    Cycle(Vec<String>),
}

/// Module name as the kernel sees it: `-` and `_` are the same.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a path like `kernel/fs/fat/vfat.ko`.
pub fn name_of(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file
        .strip_suffix(".ko")
        .or_else(|| file.strip_suffix(".ko.xz"))
        .or_else(|| file.strip_suffix(".ko.zst"))
        .or_else(|| file.strip_suffix(".ko.gz"))
        .unwrap_or(file);
    normalize(stem)
}

/// The parsed `modules.dep` (and `modules.builtin`) of one kernel.
#[derive(Debug, Default, Clone)]
pub struct ModuleIndex {
    /// Relative path → its direct dependencies (relative paths).
    deps: BTreeMap<String, Vec<String>>,
    /// Normalised name → relative path.
    by_name: BTreeMap<String, String>,
    /// Normalised names of built-in modules.
    builtin: BTreeSet<String>,
}

/// The outcome of resolving a list of names.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Relative paths, each after all of its dependencies.
    pub ordered: Vec<String>,
    /// Requested names that are built into the kernel (nothing to load).
    pub builtin: Vec<String>,
    /// Requested names the kernel has neither as module nor built in.
    pub missing: Vec<String>,
}

impl ModuleIndex {
    /// Parses `modules.dep` text and `modules.builtin` text.
    pub fn parse(dep: &str, builtin: &str) -> Result<Self, ModulesError> {
        let mut index = ModuleIndex::default();
        for (i, line) in dep.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (module, rest) = line.split_once(':').ok_or_else(|| ModulesError::Syntax {
                line: i + 1,
                text: line.to_owned(),
            })?;
            let module = module.trim().to_owned();
            let deps = rest.split_whitespace().map(str::to_owned).collect();
            index.by_name.insert(name_of(&module), module.clone());
            index.deps.insert(module, deps);
        }
        index.builtin = builtin
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| name_of(l.trim()))
            .collect();
        for (module, deps) in &index.deps {
            if let Some(dep) = deps.iter().find(|d| !index.deps.contains_key(*d)) {
                return Err(ModulesError::Dangling {
                    module: module.clone(),
                    dependency: dep.clone(),
                });
            }
        }
        Ok(index)
    }

    /// Reads `modules.dep` and `modules.builtin` from a module directory.
    pub fn load(dir: &Path) -> Result<Self, LoadError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| LoadError::Read { path, source })
        };
        let dep = read("modules.dep")?;
        let builtin = read("modules.builtin")?;
        Self::parse(&dep, &builtin).map_err(|source| LoadError::Parse {
            dir: dir.to_owned(),
            source,
        })
    }

    /// Resolves names (and `dir/` patterns, see [`ROOTFS_ALLOW`]) to module
    /// paths in load order: every module after all of its dependencies.
    /// Order is deterministic: requests in the given order, dependencies in
    /// `modules.dep` order, each path once.
    pub fn resolve(&self, requests: &[&str]) -> Result<Resolution, ModulesError> {
        let excluded: Vec<&str> = requests
            .iter()
            .filter_map(|r| r.strip_prefix('!'))
            .collect();
        let is_excluded = |path: &str| {
            excluded.iter().any(|ex| match ex.strip_suffix('/') {
                Some(dir) => path.starts_with(&format!("kernel/{dir}/")),
                None => name_of(path) == normalize(ex),
            })
        };
        let mut res = Resolution::default();
        let mut done = BTreeSet::new();
        for request in requests.iter().filter(|r| !r.starts_with('!')) {
            let roots: Vec<&String> = if let Some(dir) = request.strip_suffix('/') {
                let prefix = format!("kernel/{dir}/");
                self.deps
                    .keys()
                    .filter(|p| p.starts_with(&prefix) && !is_excluded(p))
                    .collect()
            } else {
                let name = normalize(request);
                match self.by_name.get(&name) {
                    Some(path) => vec![path],
                    None if self.builtin.contains(&name) => {
                        res.builtin.push(name);
                        continue;
                    }
                    None => {
                        res.missing.push(name);
                        continue;
                    }
                }
            };
            if roots.is_empty() {
                res.missing.push((*request).to_owned());
            }
            for root in roots {
                self.visit(root, &mut done, &mut Vec::new(), &mut res.ordered)?;
            }
        }
        Ok(res)
    }

    /// Depth-first post-order: dependencies are emitted before the module.
    fn visit(
        &self,
        path: &str,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
        out: &mut Vec<String>,
    ) -> Result<(), ModulesError> {
        if done.contains(path) {
            return Ok(());
        }
        if let Some(pos) = stack.iter().position(|p| p == path) {
            let mut cycle: Vec<String> = stack[pos..].iter().map(|p| name_of(p)).collect();
            cycle.push(name_of(path));
            return Err(ModulesError::Cycle(cycle));
        }
        stack.push(path.to_owned());
        for dep in self.deps.get(path).into_iter().flatten() {
            self.visit(dep, done, stack, out)?;
        }
        stack.pop();
        done.insert(path.to_owned());
        out.push(path.to_owned());
        Ok(())
    }
}

/// Reading a kernel's module index failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {path}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing the module index in {dir}")]
    Parse {
        dir: std::path::PathBuf,
        #[source]
        source: ModulesError,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    // A trimmed copy of real Debian 6.1 cloud entries, plus a dash name.
    const DEP: &str = "\
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/fs/fat/vfat.ko: kernel/fs/fat/fat.ko
kernel/fs/fat/fat.ko:
kernel/drivers/md/dm-mod.ko:
";
    const BUILTIN: &str = "kernel/drivers/nvme/host/nvme.ko\n";

    fn position(order: &[String], name: &str) -> usize {
        order
            .iter()
            .position(|p| name_of(p) == name)
            .unwrap_or_else(|| panic!("{name} not in {order:?}"))
    }

    #[test]
    fn dependencies_come_before_their_users() {
        let index = ModuleIndex::parse(DEP, BUILTIN).unwrap();
        let res = index
            .resolve(&["virtio_blk", "virtio_pci", "vfat"])
            .unwrap();
        let o = &res.ordered;
        assert_eq!(o.len(), 8, "{o:?}");
        assert!(position(o, "virtio_ring") < position(o, "virtio"));
        assert!(position(o, "virtio") < position(o, "virtio_blk"));
        assert!(position(o, "virtio_pci_modern_dev") < position(o, "virtio_pci"));
        assert!(position(o, "fat") < position(o, "vfat"));
        // Every module appears once.
        let unique: BTreeSet<_> = o.iter().collect();
        assert_eq!(unique.len(), o.len());
    }

    #[test]
    fn dash_and_underscore_names_match() {
        let index = ModuleIndex::parse(DEP, BUILTIN).unwrap();
        let res = index.resolve(&["dm-mod", "dm_mod"]).unwrap();
        assert_eq!(res.ordered, vec!["kernel/drivers/md/dm-mod.ko"]);
    }

    #[test]
    fn missing_and_builtin_names_are_reported_not_fatal() {
        let index = ModuleIndex::parse(DEP, BUILTIN).unwrap();
        let res = index.resolve(&["nvme", "no_such_mod", "vfat"]).unwrap();
        assert_eq!(res.builtin, vec!["nvme"]);
        assert_eq!(res.missing, vec!["no_such_mod"]);
        assert_eq!(res.ordered.len(), 2);
    }

    #[test]
    fn directory_patterns_take_every_module_below() {
        let index = ModuleIndex::parse(DEP, BUILTIN).unwrap();
        let res = index.resolve(&["fs/fat/", "net/nowhere/"]).unwrap();
        assert_eq!(
            res.ordered,
            vec!["kernel/fs/fat/fat.ko", "kernel/fs/fat/vfat.ko"]
        );
        assert_eq!(res.missing, vec!["net/nowhere/"]);
    }

    #[test]
    fn exclusions_trim_directories_but_not_dependencies() {
        let index = ModuleIndex::parse(DEP, BUILTIN).unwrap();
        let res = index
            .resolve(&["drivers/virtio/", "!virtio_pci", "!virtio"])
            .unwrap();
        let names: Vec<_> = res.ordered.iter().map(|p| name_of(p)).collect();
        assert_eq!(
            names,
            [
                "virtio_pci_legacy_dev",
                "virtio_pci_modern_dev",
                "virtio_ring"
            ]
        );
        // virtio is excluded as a root but still comes in for virtio_blk.
        let res = index.resolve(&["drivers/", "!drivers/virtio/"]).unwrap();
        let names: Vec<_> = res.ordered.iter().map(|p| name_of(p)).collect();
        assert_eq!(names, ["virtio_ring", "virtio", "virtio_blk", "dm_mod"]);
    }

    #[test]
    fn cycles_are_an_error() {
        let dep = "kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/c.ko\nkernel/c.ko: kernel/a.ko\n";
        let index = ModuleIndex::parse(dep, "").unwrap();
        assert_eq!(
            index.resolve(&["a"]),
            Err(ModulesError::Cycle(vec![
                "a".into(),
                "b".into(),
                "c".into(),
                "a".into()
            ]))
        );
    }

    #[test]
    fn dangling_dependencies_and_bad_lines_are_errors() {
        assert!(matches!(
            ModuleIndex::parse("kernel/a.ko: kernel/gone.ko\n", ""),
            Err(ModulesError::Dangling { .. })
        ));
        assert!(matches!(
            ModuleIndex::parse("kernel/a.ko\n", ""),
            Err(ModulesError::Syntax { line: 1, .. })
        ));
    }

    #[test]
    fn names_strip_directories_and_suffixes() {
        assert_eq!(name_of("kernel/drivers/md/dm-crypt.ko"), "dm_crypt");
        assert_eq!(name_of("kernel/fs/xfs/xfs.ko.zst"), "xfs");
    }
}
