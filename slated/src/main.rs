//! One binary for machined, apid and networkd, chosen by the name it is run
//! as (`/usr/bin/machined` is a symlink to `slated`), as Talos does with
//! machined.
//!
//! Why: the three daemons share tokio, tonic, rustls and serde. Linked
//! separately, each carried its own copy: the root image held that code
//! three times (over its 10 MiB budget once machined served gRPC), and the
//! node paged it in three times. Linked once, the image holds it once and
//! the page cache shares it between the processes.

use std::process::ExitCode;

fn main() -> ExitCode {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let name = std::path::Path::new(&argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    match name.as_str() {
        "machined" => slate_machined::main(),
        "apid" => slate_apid::main(),
        "networkd" => slate_networkd::main(),
        "slate-discovery" => slate_discovery::node::main(),
        other => {
            eprintln!(
                "slated: run me as machined, apid, networkd or slate-discovery (not {other:?})"
            );
            ExitCode::FAILURE
        }
    }
}
