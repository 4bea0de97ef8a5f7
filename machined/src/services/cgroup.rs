//! One cgroup v2 per service, under a root that machined owns
//! (`/sys/fs/cgroup/slate` on a node): limits go in before the process
//! does, and stopping kills the whole group, children included.
//!
//! Written against the cgroupfs files directly: the few writes needed do
//! not justify a dependency, and the crates that wrap them (cgroups-rs)
//! pull in v1 support and more than we use.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::spec::Limits;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("creating cgroup {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("opening {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A service's cgroup.
#[derive(Debug, Clone)]
pub struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    /// Creates (or reuses) `root/id` and enables in `root` the controllers
    /// that `limits` need and the kernel has. Returns, beside the cgroup,
    /// one line per limit that could not be set, for the service's events.
    pub fn create(
        root: &Path,
        id: &str,
        limits: &Limits,
    ) -> Result<(Self, Vec<String>), CgroupError> {
        std::fs::create_dir_all(root).map_err(|source| CgroupError::Create {
            path: root.to_owned(),
            source,
        })?;
        let wanted: Vec<&str> = [
            ("memory", limits.memory_max.is_some()),
            ("cpu", limits.cpu_max_us.is_some()),
            ("pids", limits.pids_max.is_some()),
        ]
        .into_iter()
        .filter_map(|(c, needed)| needed.then_some(c))
        .collect();
        // A controller reaches `root/id` only if `root`'s parent hands it
        // to `root` and `root` hands it on. Already enabled is fine; a
        // failure shows up as a missing limit file below.
        for dir in root.parent().into_iter().chain([root]) {
            let available =
                std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
            for controller in &wanted {
                if available.split_whitespace().any(|c| c == *controller) {
                    let _ = std::fs::write(
                        dir.join("cgroup.subtree_control"),
                        format!("+{controller}"),
                    );
                }
            }
        }
        let path = root.join(id);
        std::fs::create_dir_all(&path).map_err(|source| CgroupError::Create {
            path: path.clone(),
            source,
        })?;
        let cgroup = Self { path };
        let mut problems = Vec::new();
        let mut set = |file: &str, value: String| {
            if let Err(e) = std::fs::write(cgroup.path.join(file), &value) {
                problems.push(format!("{file} = {value}: {e} (limit not applied)"));
            }
        };
        if let Some(bytes) = limits.memory_max {
            set("memory.max", bytes.to_string());
            // No swap either: a leak must hit the limit, not the disk.
            if cgroup.path.join("memory.swap.max").exists() {
                set("memory.swap.max", "0".into());
            }
        }
        if let Some(us) = limits.cpu_max_us {
            set("cpu.max", format!("{us} 100000"));
        }
        if let Some(n) = limits.pids_max {
            set("pids.max", n.to_string());
        }
        Ok((cgroup, problems))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `cgroup.procs`, opened for the child to write itself into between
    /// fork and exec (where only async-signal-safe calls are allowed, so
    /// the file must be open already).
    pub fn procs_file(&self) -> Result<File, CgroupError> {
        let path = self.path.join("cgroup.procs");
        File::options()
            .write(true)
            .open(&path)
            .map_err(|source| CgroupError::Open { path, source })
    }

    /// The processes in the cgroup now.
    pub fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// SIGKILLs everything in the cgroup (`cgroup.kill`, Linux 5.14+, else
    /// each process) and waits up to `wait` for it to empty.
    pub async fn kill_all(&self, wait: Duration) {
        let killed = File::options()
            .write(true)
            .open(self.path.join("cgroup.kill"))
            .and_then(|mut f| f.write_all(b"1"));
        if killed.is_err() {
            for pid in self.pids() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let deadline = tokio::time::Instant::now() + wait;
        while !self.pids().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Memory in use now (`memory.current`), if the controller is on.
    pub fn memory_current(&self) -> Option<u64> {
        std::fs::read_to_string(self.path.join("memory.current"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// `memory.events`' `oom_kill` count: kills by the cgroup's own limit.
    pub fn oom_kills(&self) -> u64 {
        std::fs::read_to_string(self.path.join("memory.events"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// Kills everything in the service cgroups under `root` and removes them
/// and `root`: for tests and benchmarks that make a root of their own
/// (machined keeps its root for the node's life). Waits up to 1 s per
/// cgroup for it to empty; errors are ignored (nothing to clean up).
pub fn remove_tree(root: &Path) {
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten().filter(|e| e.path().is_dir()) {
            let _ = std::fs::write(e.path().join("cgroup.kill"), "1");
            for _ in 0..100 {
                if std::fs::remove_dir(e.path()).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    let _ = std::fs::remove_dir(root);
}

/// The cgroup2 mount point: `/sys/fs/cgroup` on a node; on a host with the
/// hybrid layout, `/sys/fs/cgroup/unified`.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, target, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(target))
    })
}
