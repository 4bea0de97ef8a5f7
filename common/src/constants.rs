//! Paths, ports and names that more than one Slate binary depends on.
//!
//! Keep them here, and only here: a daemon that hard-codes a path beside
//! its constant is how two binaries stop agreeing.

/// Port of apid's gRPC API (mutual TLS).
pub const APID_PORT: u16 = 50000;

/// Port of the trust service on control-plane nodes (machined, TLS with a
/// certificate of the machine CA): it signs the API certificate of a node
/// that holds no machine CA key (a worker) for a caller that shows the
/// cluster's machine token. Talos's trustd listens on the same port.
pub const TRUST_PORT: u16 = 50001;

/// gRPC metadata that carries the machine token to the trust service.
pub const TRUST_TOKEN_HEADER: &str = "x-slate-machine-token";

/// Port of the mesh's discovery service: where a control-plane node's own
/// copy listens, and where networkd looks for it at the control-plane
/// endpoint's host when `cluster.mesh.discovery.endpoint` is unset.
pub const DISCOVERY_PORT: u16 = 3000;

/// Runtime state shared between daemons (tmpfs).
pub const RUN_DIR: &str = "/run/slate";

/// Machine config published by machined once it is loaded and valid, as
/// JSON: machine-written and machine-read, and far cheaper to parse than
/// the user's YAML on the way to a reachable API. Written atomically (mode
/// 0600: it holds the CA keys); apid and networkd read it.
pub const MACHINE_CONFIG_FILE: &str = "/run/slate/machine-config.json";

/// What apid is told of the running config, published by machined beside
/// [`MACHINE_CONFIG_FILE`] (JSON, `slate_config::ApiView`): the machine CA
/// certificate and `machine.certSANs`, nothing secret. Mode 0640, group
/// [`APID_GID`]: apid reads only this, never the config.
pub const API_VIEW_FILE: &str = "/run/slate/api-view.json";

/// The user and group apid runs as (set by init between fork and exec).
/// Not 0: a code-execution bug in apid then owns no file, no device and
/// no /proc/sys knob. In Debian's reserved 60000-64999 range, away from
/// the ids container images commonly run as (0, system users below 1000,
/// 1000 and up, 65532, 65534), so a container without a user namespace
/// does not share it by accident. Also the group
/// of [`RUN_DIR`] (setgid), so the sockets and the view machined and
/// networkd create there are apid's group's and no one else's.
pub const APID_UID: u32 = 60600;
pub const APID_GID: u32 = 60600;

/// Written by machined instead of [`MACHINE_CONFIG_FILE`] when the config it
/// found is unusable: one human-readable line naming the file, line and error.
/// apid then serves in maintenance mode.
pub const MACHINE_CONFIG_ERROR_FILE: &str = "/run/slate/machine-config.error";

/// Written by networkd (atomically) once the first non-loopback address is
/// configured: one line per address, `IFNAME ADDRESS/PREFIX SOURCE`.
pub const NETWORK_READY_FILE: &str = "/run/slate/network.ready";

/// The addresses networkd's reconciler added, one `IFNAME CIDR` a line: it
/// removes only those, also after a restart.
pub const NETWORKD_OWNED_FILE: &str = "/run/slate/networkd-owned";

/// resolv.conf written by networkd; `/etc/resolv.conf` in the image links here
/// because the root filesystem is read-only.
pub const RESOLV_CONF_FILE: &str = "/run/slate/resolv.conf";

/// machined's gRPC socket: the machine service's calls that change the
/// node (apply-config, reboot, …), which apid forwards after checking the
/// caller's role, and the trust service that signs apid's certificate.
/// Mode 0660, group [`APID_GID`]: root and apid reach it.
pub const MACHINED_SOCKET: &str = "/run/slate/machined.sock";

/// networkd's resource socket: links, addresses and routes, which apid
/// forwards `get` calls for. Mode 0660, group [`APID_GID`].
pub const NETWORKD_SOCKET: &str = "/run/slate/networkd.sock";

/// The resource types networkd owns (apid routes them there).
pub const NETWORKD_RESOURCE_TYPES: &[&str] = &[
    "links",
    "addresses",
    "routes",
    "hostname",
    "resolvers",
    "networkstatus",
    "timestatus",
    "apibalancer",
    "mesh-identity",
    "mesh-peers",
];

/// GPT partition name and ext4 label of the STATE volume (machine config,
/// node keys), and where machined mounts it (mode 0700).
pub const STATE_LABEL: &str = "STATE";

/// GPT partition name and ext4 label of EPHEMERAL (the rest of the system
/// disk), mounted on [`VAR_DIR`].
pub const EPHEMERAL_LABEL: &str = "EPHEMERAL";
pub const VAR_DIR: &str = "/var";

/// machined's cgroup: one child per service (`slate/containerd`, …).
pub const SERVICES_CGROUP: &str = "/sys/fs/cgroup/slate";

/// Where the services' logs are kept (rotated, `ID.log`).
pub const SERVICE_LOG_DIR: &str = "/var/log/slate";
pub const STATE_MOUNT: &str = "/run/slate/state";

/// mke2fs in the root image (from Debian's e2fsprogs, see image/src/hostbin.rs).
pub const MKE2FS_BIN: &str = "/usr/sbin/mke2fs";

/// Set by apid on a call it forwards to machined without a client
/// certificate (allowed only in maintenance mode). machined refuses such a
/// call once the node has a config, closing the moment between the first
/// config and apid's switch to mutual TLS. Only root and apid reach
/// machined's socket, and apid never forwards its callers' metadata.
pub const UNAUTHENTICATED_HEADER: &str = "x-slate-unauthenticated";

/// How often the daemons make their certificates anew (apid's server and
/// proxy certificates, the trust service's): each is valid a year.
pub const CERT_RENEW_EVERY: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// gRPC metadata naming the node a call is for (`slatectl -e CP -n
/// NODE`): the apid it reaches forwards it there (docs/join.md).
pub const NODE_HEADER: &str = "x-slate-node";

/// gRPC metadata with which a forwarding apid names its caller's role;
/// believed only from a client certificate of the machine CA with the
/// Organization `os:impersonator`.
pub const ROLE_HEADER: &str = "x-slate-role";

/// Where stage 2 finds the daemons it supervises.
pub const MACHINED_BIN: &str = "/usr/bin/machined";
pub const APID_BIN: &str = "/usr/bin/apid";
pub const NETWORKD_BIN: &str = "/usr/bin/networkd";

/// Label of a nocloud config drive (ISO 9660 or vfat) and the file on it
/// that holds the machine config.
pub const CONFIG_DRIVE_LABEL: &str = "cidata";
pub const CONFIG_DRIVE_USER_DATA: &str = "user-data";

/// Modules init loads in stage 1, from the initramfs: one absolute path a
/// line, each after its dependencies. Only what is needed to mount the root
/// image, reach the network and read a config drive.
pub const STAGE1_MODULE_LIST: &str = "/lib/modules/slate-stage1.list";

/// Modules init loads in stage 2, from the root image, at the lowest CPU
/// priority while the daemons start (same format): drivers that are not
/// needed to reach the API, kept off the boot's critical path.
pub const LATE_MODULE_LIST: &str = "/lib/modules/slate-late.list";

/// Link drivers (VLAN, dummy, bridge, bond, wireguard) init loads once the node has its
/// first address, off the boot's critical path (same format).
pub const LINK_MODULE_LIST: &str = "/lib/modules/slate-links.list";

/// Kernel command line, read through a path so tests can pass their own.
pub const PROC_CMDLINE: &str = "/proc/cmdline";
