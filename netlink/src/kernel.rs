//! The kernel as the reconciler sees it: read links, addresses and routes;
//! carry out one [`Op`]. A trait (like init's `Host`) because what the
//! reconciler does around those two calls (remembering the addresses it
//! added, reporting failed operations, retrying them, writing nothing when
//! nothing changed) is worth testing without root or a network namespace;
//! networkd's unit tests run it against an in-memory kernel.

use std::future::Future;
use std::path::PathBuf;

use rtnetlink::Handle;

use crate::model::{Actual, Op};
use crate::state::{self, NetlinkError};

pub trait Kernel {
    /// The links, the addresses and networkd's own routes.
    fn read(&self) -> impl Future<Output = Result<Actual, NetlinkError>> + Send;
    /// Carries out one operation.
    fn execute(&self, op: &Op) -> impl Future<Output = Result<(), NetlinkError>> + Send;
}

/// The real kernel, over rtnetlink; `sysfs` is where each link's driver
/// and bus path are read.
#[derive(Clone)]
pub struct Rtnetlink {
    handle: Handle,
    sysfs: PathBuf,
}

impl Rtnetlink {
    pub fn new(handle: Handle, sysfs: impl Into<PathBuf>) -> Self {
        Self {
            handle,
            sysfs: sysfs.into(),
        }
    }
}

impl Kernel for Rtnetlink {
    fn read(&self) -> impl Future<Output = Result<Actual, NetlinkError>> + Send {
        state::read(&self.handle, &self.sysfs)
    }

    fn execute(&self, op: &Op) -> impl Future<Output = Result<(), NetlinkError>> + Send {
        state::execute(&self.handle, op)
    }
}
