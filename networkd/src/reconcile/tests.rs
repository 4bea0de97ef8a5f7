//! The reconciler's bookkeeping against an in-memory kernel: which
//! addresses it remembers as its own, what a failed operation leaves, and
//! that a converged node is left alone. (The netns tests in
//! `tests/reconcile.rs` run the same passes against the real kernel.)

use std::collections::BTreeSet;
use std::sync::Mutex;

use slate_netlink::kernel::Kernel;
use slate_netlink::state::NetlinkError;

use super::Reconciler;
use super::model::{Actual, ActualLink, Addr, Op};

/// One NIC, `eth0`, down; addresses and routes as the test puts them.
/// Operations whose text is in `refuse` fail as the kernel would refuse
/// them; every operation carried out is recorded.
struct FakeKernel {
    state: Mutex<Actual>,
    refuse: Mutex<BTreeSet<String>>,
    executed: Mutex<Vec<String>>,
}

impl FakeKernel {
    fn new() -> Self {
        let eth0 = ActualLink {
            index: 2,
            name: "eth0".into(),
            info_kind: None,
            mtu: Some(1500),
            up: false,
            controller: None,
            mac: "52:54:00:12:34:56".into(),
            driver: Some("virtio_net".into()),
            bus_paths: vec!["virtio0".into()],
        };
        Self {
            state: Mutex::new(Actual {
                links: vec![eth0],
                ..Default::default()
            }),
            refuse: Mutex::new(BTreeSet::new()),
            executed: Mutex::new(Vec::new()),
        }
    }

    fn addresses(&self) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state.addresses.iter().map(|a| a.net.to_string()).collect()
    }

    fn add_by_hand(&self, net: &str) {
        self.state.lock().unwrap().addresses.insert(addr(net));
    }

    fn take_executed(&self) -> Vec<String> {
        std::mem::take(&mut *self.executed.lock().unwrap())
    }

    fn apply(&self, op: &Op) -> Result<(), NetlinkError> {
        let mut state = self.state.lock().unwrap();
        let no_link = |ifname: &str| NetlinkError::NoLink {
            op: op.to_string(),
            ifname: ifname.to_owned(),
        };
        match op {
            Op::SetUp { ifname } => {
                let link = state.links.iter_mut().find(|l| &l.name == ifname);
                link.ok_or_else(|| no_link(ifname))?.up = true;
            }
            Op::SetMtu { ifname, mtu } => {
                let link = state.links.iter_mut().find(|l| &l.name == ifname);
                link.ok_or_else(|| no_link(ifname))?.mtu = Some(*mtu);
            }
            Op::AddAddress(a) => {
                state.link(&a.ifname).ok_or_else(|| no_link(&a.ifname))?;
                state.addresses.insert(a.clone());
            }
            Op::DelAddress(a) => {
                state.addresses.remove(a);
            }
            Op::AddRoute(r) => {
                state.routes.insert(r.clone());
            }
            Op::DelRoute(r) => {
                state.routes.remove(r);
            }
            Op::CreateLink(_) | Op::SetController { .. } => {
                unreachable!("the tests' configs create no links: {op}")
            }
        }
        Ok(())
    }
}

impl Kernel for &FakeKernel {
    async fn read(&self) -> Result<Actual, NetlinkError> {
        Ok(self.state.lock().unwrap().clone())
    }

    async fn execute(&self, op: &Op) -> Result<(), NetlinkError> {
        let text = op.to_string();
        self.executed.lock().unwrap().push(text.clone());
        if self.refuse.lock().unwrap().contains(&text) {
            return Err(NetlinkError::Op {
                op: text,
                source: rtnetlink::Error::RequestFailed,
            });
        }
        self.apply(op)
    }
}

fn addr(net: &str) -> Addr {
    Addr {
        ifname: "eth0".into(),
        net: net.parse().unwrap(),
    }
}

fn network(addresses: &[&str]) -> slate_config::Network {
    let yaml = format!(
        "interfaces:\n  - interface: eth0\n    addresses: [{}]\n",
        addresses.join(", ")
    );
    slate_config::yaml::from_str(&yaml).unwrap()
}

fn pass<K: Kernel>(r: &mut Reconciler<K>, addresses: &[&str]) -> super::Report {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(r.pass(&network(addresses))).unwrap()
}

#[test]
fn a_converged_node_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = FakeKernel::new();
    let mut r = Reconciler::new(&kernel, dir.path().join("owned"));
    let report = pass(&mut r, &["10.0.0.5/24"]);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(
        kernel.take_executed(),
        ["eth0: up", "eth0: add 10.0.0.5/24"]
    );
    assert_eq!(kernel.addresses(), ["10.0.0.5/24"]);
    assert!(report.present.contains(&addr("10.0.0.5/24")));

    let again = pass(&mut r, &["10.0.0.5/24"]);
    assert!(again.done.is_empty(), "{:?}", again.done);
    assert!(kernel.take_executed().is_empty());
}

#[test]
fn only_addresses_networkd_added_are_removed_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let owned = dir.path().join("owned");
    let kernel = FakeKernel::new();
    kernel.add_by_hand("192.168.9.9/24");
    {
        let mut r = Reconciler::new(&kernel, owned.clone());
        pass(&mut r, &["10.0.0.5/24", "10.0.1.5/24"]);
    }
    assert_eq!(
        std::fs::read_to_string(&owned).unwrap(),
        "eth0 10.0.0.5/24\neth0 10.0.1.5/24\n"
    );
    // networkd restarts and the config drops one address and never named
    // the one added by hand: only networkd's own goes.
    let mut r = Reconciler::new(&kernel, owned.clone());
    kernel.take_executed();
    pass(&mut r, &["10.0.0.5/24"]);
    assert_eq!(kernel.take_executed(), ["eth0: remove 10.0.1.5/24"]);
    assert_eq!(kernel.addresses(), ["10.0.0.5/24", "192.168.9.9/24"]);
    assert_eq!(
        std::fs::read_to_string(&owned).unwrap(),
        "eth0 10.0.0.5/24\n"
    );
}

#[test]
fn a_refused_operation_is_reported_not_owned_and_tried_again() {
    let dir = tempfile::tempdir().unwrap();
    let owned = dir.path().join("owned");
    let kernel = FakeKernel::new();
    kernel
        .refuse
        .lock()
        .unwrap()
        .insert("eth0: add 10.0.1.5/24".into());
    let mut r = Reconciler::new(&kernel, owned.clone());
    let report = pass(&mut r, &["10.0.0.5/24", "10.0.1.5/24"]);
    assert_eq!(
        report.failed,
        ["eth0: add 10.0.1.5/24: A netlink request failed"]
    );
    // What did work stays done and owned; the refused one is neither.
    assert_eq!(kernel.addresses(), ["10.0.0.5/24"]);
    assert!(!report.present.contains(&addr("10.0.1.5/24")));
    assert_eq!(
        std::fs::read_to_string(&owned).unwrap(),
        "eth0 10.0.0.5/24\n"
    );

    kernel.refuse.lock().unwrap().clear();
    kernel.take_executed();
    let retry = pass(&mut r, &["10.0.0.5/24", "10.0.1.5/24"]);
    assert!(retry.failed.is_empty(), "{:?}", retry.failed);
    assert_eq!(kernel.take_executed(), ["eth0: add 10.0.1.5/24"]);
    assert_eq!(kernel.addresses(), ["10.0.0.5/24", "10.0.1.5/24"]);
}

#[test]
fn a_missing_interface_is_reported_and_nothing_is_done_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = FakeKernel::new();
    let mut r = Reconciler::new(&kernel, dir.path().join("owned"));
    let yaml = "interfaces:\n  - interface: eth7\n    addresses: [10.7.0.1/24]\n";
    let net: slate_config::Network = slate_config::yaml::from_str(yaml).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let report = rt.block_on(r.pass(&net)).unwrap();
    assert_eq!(report.missing, ["eth7: no such link"]);
    assert!(kernel.take_executed().is_empty());
    assert!(kernel.addresses().is_empty());
}
