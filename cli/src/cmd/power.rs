//! `slatectl reboot` and `slatectl shutdown`: the node stops its daemons in
//! order (init sends SIGTERM, waits, then SIGKILL), syncs, unmounts, and
//! reboots or powers off.

use std::process::ExitCode;

use slate_proto::machine::{RebootRequest, ShutdownRequest};

use crate::{Global, connect};

#[derive(Debug, Clone, Copy)]
pub enum Action {
    Reboot,
    Shutdown,
}

pub async fn run(global: &Global, action: Action) -> anyhow::Result<ExitCode> {
    let session = connect::session(global)?;
    let (results, ok) = session
        .for_each(|channel| async move {
            let mut api = connect::machine(channel);
            match action {
                Action::Reboot => api.reboot(RebootRequest {}).await.map(drop),
                Action::Shutdown => api.shutdown(ShutdownRequest {}).await.map(drop),
            }
        })
        .await;
    for (target, ()) in results {
        match action {
            Action::Reboot => println!("{target}: rebooting"),
            Action::Shutdown => println!("{target}: shutting down"),
        }
    }
    Ok(crate::output::exit_code(ok))
}
