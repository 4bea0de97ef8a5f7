//! Test and benchmark harness for Slate images: boots the real image in
//! QEMU and talks to it like a user would, through slatectl's client code.
//!
//! - [`qemu`]: the VM command line, serial console capture, port forward,
//!   and a VM that is always killed (also when a test panics);
//! - [`configdrive`]: nocloud config drives (`cidata`) made with xorriso;
//! - [`console`]: waiting for console lines and showing the tail on failure;
//! - [`api`]: waiting until apid answers `Version`;
//! - [`layer`]: a node booted with an extension layer the test builds;
//! - [`cluster`]: several VMs on one private LAN (multi-node tests, `make cluster`);
//! - [`artifacts`]: where the built image is;
//! - [`bench`] and [`floor`]: `make bench` and the busybox floor it compares against;
//! - [`svcbench`]: the service supervisor's own cost;
//! - [`etcdbench`]: one node from QEMU's start to a healthy etcd;
//! - [`bundles`]: release bundles made for tests (one that cannot boot);
//! - [`installbench`]: install, upgrade downtime, rollback after a failed boot;
//! - [`joinbench`]: a node with a join token to registered, and accepted
//!   to answering;
//! - [`netns`]: network namespaces with dnsmasq and networkd, for
//!   networkd's tests and [`netbench`];
//! - [`meshlab`]: cloud, bare-metal and NATed nodes in namespaces, for the
//!   mesh's acceptance test;
//! - [`apiservers`]: stand-in API servers in namespaces, for the API
//!   balancer's tests and [`balancerbench`];
//! - [`meshnode`]: networkd's WireGuard mesh between two namespaces, for
//!   its tests and [`meshbench`] (mesh against plain veth, iperf3).

pub mod api;
pub mod apiservers;
pub mod artifacts;
pub mod balancerbench;
pub mod bench;
pub mod bundles;
pub mod cluster;
pub mod configdrive;
pub mod console;
pub mod etcdbench;
pub mod floor;
pub mod installbench;
pub mod joinbench;
pub mod layer;
pub mod meshbench;
pub mod meshlab;
pub mod meshnode;
pub mod netbench;
pub mod netns;
pub mod oci;
pub mod qemu;
pub mod slatectl;
pub mod svcbench;
pub mod wait;
