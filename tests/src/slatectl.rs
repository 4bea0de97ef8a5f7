//! Running the slatectl binary of the same build, as a user runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// slatectl beside the running test or tool: `target/<triple>/release/`
/// (tests run from its `deps/`).
pub fn path() -> PathBuf {
    let exe = std::env::current_exe().expect("the running program's path");
    let dir = exe.parent().expect("a directory");
    let dir = if dir.ends_with("deps") {
        dir.parent().expect("a directory")
    } else {
        dir
    };
    dir.join("slatectl")
}

/// Runs slatectl with `args`, ignoring the user's `SLATECONFIG`, and
/// echoes what it printed (shown when a test fails).
pub fn run(args: &[&str]) -> Output {
    let out = Command::new(path())
        .args(args)
        .env_remove("SLATECONFIG")
        .output()
        .expect("running slatectl (make build)");
    eprintln!(
        "$ slatectl {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// slatectl with a client config against one node.
pub fn run_as(config: &Path, node: &str, args: &[&str]) -> Output {
    let mut all = vec![
        "--config",
        config.to_str().expect("a UTF-8 path"),
        "-n",
        node,
    ];
    all.extend_from_slice(args);
    run(&all)
}

/// stdout and stderr together.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
