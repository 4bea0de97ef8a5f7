//! Records the git commit in the build, so a node and a client can say
//! exactly what they run. `SLATE_COMMIT` wins so that builds outside a git
//! checkout (and reproducible builds) can pin it.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=SLATE_COMMIT");
    let commit = std::env::var("SLATE_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(git_commit);
    println!(
        "cargo:rustc-env=SLATE_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
}

fn git_commit() -> Option<String> {
    let top = Command::new("git")
        .args(["rev-parse", "--show-toplevel"])
        .output()
        .ok()?;
    let top = String::from_utf8(top.stdout).ok()?;
    let git_dir = std::path::Path::new(top.trim()).join(".git");
    // Rebuild when HEAD moves (a commit, a checkout).
    println!("cargo:rerun-if-changed={}", git_dir.join("HEAD").display());
    println!("cargo:rerun-if-changed={}", git_dir.join("refs").display());
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
