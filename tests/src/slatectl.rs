//! Running the slatectl binary of the same build, as a user runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// slatectl of the same build ([`crate::artifacts::built`]).
pub fn path() -> PathBuf {
    crate::artifacts::built("slatectl")
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

/// `slatectl gen config NAME https://127.0.0.1:6443` into `dir`, with
/// 127.0.0.1 among the API names: a node reachable through QEMU's forward.
pub fn gen_config(name: &str, dir: &Path) {
    let out = run(&[
        "gen",
        "config",
        name,
        "https://127.0.0.1:6443",
        "--additional-sans",
        "127.0.0.1",
        "-o",
        dir.to_str().expect("a UTF-8 path"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
}

/// `apply-config --insecure -f config` to a node in maintenance mode.
pub fn apply_insecure(node: &str, config: &Path) -> Output {
    run(&[
        "-n",
        node,
        "--insecure",
        "apply-config",
        "-f",
        config.to_str().expect("a UTF-8 path"),
    ])
}

/// stdout and stderr together.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A following slatectl (`logs -f`, `dmesg -f`) whose lines are collected
/// as they come; killed when dropped.
pub struct Follow {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Follow {
    /// Starts slatectl with a client config against one node.
    pub fn start(config: &Path, node: &str, args: &[&str]) -> Self {
        use std::io::BufRead as _;
        let mut child = Command::new(path())
            .args([
                "--config",
                config.to_str().expect("a UTF-8 path"),
                "-n",
                node,
            ])
            .args(args)
            .env_remove("SLATECONFIG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("running slatectl (make build)");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        Self { child, lines }
    }

    /// The first line so far that contains `needle`.
    pub fn find(&self, needle: &str) -> Option<String> {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|l| l.contains(needle))
            .cloned()
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits up to `timeout` for a line with `needle`.
    pub async fn wait_for(&self, needle: &str, timeout: std::time::Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(line) = self.find(needle) {
                return Some(line);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
