//! Kernel WireGuard through netlink, in a network namespace of its own.
//!
//! On a kernel without WireGuard (this build machine's) `create` must say
//! so with [`KernelError::Unsupported`], a message a user can act on, and
//! leave no link behind. With the module (a Debian kernel, the Slate VM):
//! a device with two peers reads back as configured, an endpoint moves,
//! a second `create` takes the link over with its peers, and `delete`
//! removes it. Root only; skipped with a message otherwise.

#![allow(clippy::unwrap_used)] // test code: a failed step is a failed test

use std::net::SocketAddr;
use std::path::Path;

use slate_mesh::device::PeerConfig;
use slate_mesh::kernel::{KernelDevice, KernelError};
use slate_mesh::keys::NodeKey;
use slate_mesh::select::Path as MeshPath;
use slate_tests::netns::{self, Namespaces};

const NS: &str = "slkwg";
const LINK: &str = "slwg0";
const PORT: u16 = 51821;
const FWMARK: u32 = 0x5a1;

fn skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let why = if unsafe { libc::geteuid() } != 0 {
        Some("not root")
    } else if !Path::new("/usr/sbin/ip").exists() && !Path::new("/sbin/ip").exists() {
        Some("ip (iproute2) not installed")
    } else {
        None
    };
    if let Some(why) = why {
        slate_testskip::skip(test, slate_testskip::Reason::Setup(why));
    }
    why.is_some()
}

fn module_loaded() -> bool {
    Path::new("/sys/module/wireguard").exists()
}

/// Runs `body` on a thread inside namespace `NS`, on a runtime of its own.
fn in_namespace<F, Fut>(body: F)
where
    F: FnOnce(rtnetlink::Handle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let thread = std::thread::spawn(move || {
        netns::enter(NS).expect("entering the namespace");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (conn, handle, _) = rtnetlink::new_connection().unwrap();
            tokio::spawn(conn);
            body(handle).await
        })
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

fn link_exists(name: &str) -> bool {
    std::process::Command::new("ip")
        .args(["-n", NS, "link", "show", name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn peer(key: &NodeKey, endpoints: &[&str], ips: &[&str]) -> PeerConfig {
    PeerConfig {
        public_key: key.public_bytes(),
        endpoints: endpoints.iter().map(|e| e.parse().unwrap()).collect(),
        allowed_ips: ips.iter().map(|n| n.parse().unwrap()).collect(),
        persistent_keepalive: Some(25),
        relays: vec![],
    }
}

#[test]
fn kernel_wireguard_or_a_clear_unsupported() {
    if skip("kernel_wireguard_or_a_clear_unsupported") {
        return;
    }
    let mut namespaces = Namespaces::new();
    namespaces.add(NS);

    // Wrong kind: never taken over (checked before WireGuard is needed).
    in_namespace(|handle| async move {
        let key = NodeKey::generate().unwrap();
        match KernelDevice::create(&handle, "lo", &key, PORT, FWMARK).await {
            Err(KernelError::NotWireguard { link, .. }) => assert_eq!(link, "lo"),
            other => panic!("taking over lo: {other:?}"),
        }
    });

    let loaded_before = module_loaded();
    let (tx, rx) = std::sync::mpsc::channel();
    in_namespace(move |handle| async move {
        let key = NodeKey::generate().unwrap();
        let result = KernelDevice::create(&handle, LINK, &key, PORT, FWMARK).await;
        let supported = match result {
            Ok(device) => {
                exercise(&handle, device, &key).await;
                true
            }
            Err(e @ KernelError::Unsupported { .. }) => {
                let text = e.to_string();
                eprintln!("create: {text}");
                assert!(
                    text.contains("no WireGuard support") && text.contains(LINK),
                    "{text}"
                );
                false
            }
            Err(e) => panic!("create: {e:?}"),
        };
        tx.send(supported).unwrap();
    });
    let supported = rx.recv().unwrap();
    // Creating the link may load the module (a host with modprobe).
    let loaded_after = module_loaded();
    if supported {
        assert!(
            loaded_after,
            "WireGuard worked without /sys/module/wireguard"
        );
    } else {
        assert!(
            !loaded_before && !loaded_after,
            "Unsupported although the wireguard module is loaded"
        );
        eprintln!("no WireGuard in this kernel: only the Unsupported path was checked");
    }
    assert!(!link_exists(LINK), "{LINK} left behind");
}

/// The full path on a kernel with WireGuard.
async fn exercise(handle: &rtnetlink::Handle, mut device: KernelDevice, key: &NodeKey) {
    assert!(link_exists(LINK));
    let a = NodeKey::generate().unwrap();
    let b = NodeKey::generate().unwrap();
    let peers = [
        peer(
            &a,
            &["192.0.2.1:51820", "192.0.2.11:51820"],
            &["fd00:5a::a/128", "10.244.1.0/24"],
        ),
        peer(&b, &["[2001:db8::b]:51820"], &["fd00:5a::b/128"]),
    ];
    device.set_peers(&peers).await.unwrap();
    let status = device.status().await.unwrap();
    assert_eq!(status.peers.len(), 2, "{status:?}");
    for p in &peers {
        let got = status
            .peers
            .iter()
            .find(|s| s.public_key == p.public_key)
            .unwrap_or_else(|| panic!("peer missing from {status:?}"));
        assert_eq!(got.endpoint, Some(MeshPath::Direct(p.endpoints[0])));
    }
    let read = device.peers().await.unwrap();
    for p in &peers {
        let got = read.iter().find(|r| r.public_key == p.public_key).unwrap();
        let mut want = p.allowed_ips.clone();
        want.sort();
        let mut have = got.allowed_ips.clone();
        have.sort();
        assert_eq!(have, want);
        assert_eq!(got.persistent_keepalive, Some(25));
    }

    let moved: SocketAddr = "192.0.2.11:51820".parse().unwrap();
    device.set_endpoint(&a.public_bytes(), moved).await.unwrap();
    assert_eq!(
        endpoint_of(&device, &a).await,
        Some(MeshPath::Direct(moved))
    );
    // An unknown key is refused, not created.
    assert!(matches!(
        device.set_endpoint(&[9; 32], moved).await,
        Err(KernelError::UnknownPeer { .. })
    ));

    // Re-applying the same set keeps the chosen candidate endpoint.
    device.set_peers(&peers).await.unwrap();
    assert_eq!(
        endpoint_of(&device, &a).await,
        Some(MeshPath::Direct(moved))
    );

    // A restarted networkd takes the link over, peers and all; a smaller
    // set removes the other peer.
    let index = device.index();
    drop(device);
    let mut device = KernelDevice::create(handle, LINK, key, PORT, FWMARK)
        .await
        .unwrap();
    assert_eq!(device.index(), index);
    assert_eq!(device.status().await.unwrap().peers.len(), 2);
    device.set_peers(&peers[1..]).await.unwrap();
    let status = device.status().await.unwrap();
    assert_eq!(status.peers.len(), 1);
    assert_eq!(status.peers[0].public_key, b.public_bytes());

    // Many peers, one with many allowed IPs: the set goes out in several
    // messages and comes back in several dump messages (a peer's allowed
    // IPs continued in the next), and reads back whole.
    let many: Vec<PeerConfig> = (0..300u32)
        .map(|i| {
            let ips: Vec<String> = if i == 7 {
                (0..2000u32)
                    .map(|j| format!("fd00:77::{:x}:{:x}/128", j >> 8, j & 0xff))
                    .collect()
            } else {
                vec![
                    format!("fd00:5a::{i:x}/128"),
                    format!("10.{}.{}.0/24", i >> 8, i & 0xff),
                ]
            };
            let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
            let endpoint = format!("192.0.2.{}:{}", i % 250 + 1, 51820 + i);
            peer(&NodeKey::generate().unwrap(), &[&endpoint], &ips)
        })
        .collect();
    device.set_peers(&many).await.unwrap();
    let mut read = device.peers().await.unwrap();
    assert_eq!(read.len(), many.len());
    for p in &many {
        let got = read
            .iter_mut()
            .find(|r| r.public_key == p.public_key)
            .expect("every peer read back");
        let mut want = p.allowed_ips.clone();
        want.sort();
        got.allowed_ips.sort();
        assert_eq!(got.allowed_ips, want);
        assert_eq!(got.endpoint, Some(p.endpoints[0]));
    }

    device.delete(handle).await.unwrap();
    assert!(!link_exists(LINK));
}

/// The endpoint the kernel reports for `peer`.
async fn endpoint_of(device: &KernelDevice, peer: &NodeKey) -> Option<MeshPath> {
    let status = device.status().await.unwrap();
    let got = status
        .peers
        .iter()
        .find(|s| s.public_key == peer.public_bytes());
    got.expect("the peer is on the device").endpoint
}
