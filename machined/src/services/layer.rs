//! Where the extension layer puts what the services run: its programs,
//! their libraries and containerd's socket. A leaf module, so the catalog,
//! kubelet and etcd all read these without reading each other.

/// Where the extension layer's programs are.
pub const EXTENSIONS_BIN: &str = "/usr/local/bin";
/// And their shared libraries.
pub const EXTENSIONS_LIB: &str = "/usr/local/lib";

/// containerd's socket, where kubelet (CRI) and `ctr` find it.
pub const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
