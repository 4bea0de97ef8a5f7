//! The service supervisor on the host, with real processes in real cgroups
//! (root and a cgroup2 mount needed; skipped with a message otherwise).
//! Each test gets a cgroup root of its own, removed at the end.
// Test helpers outside #[test] fns: a panic here fails the test that called it.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use slate_machined::services::spec::{
    Condition, HealthCheck, Limits, Probe, Restart, RestartPolicy, prepare_with,
};
use slate_machined::services::{Command, ServiceSpec, State, Status, Supervisor, cgroup};

/// A cgroup root for one test: everything under it is killed and removed
/// on drop, also when the test failed.
struct Root(PathBuf);

impl Root {
    fn new(test: &str) -> Option<Root> {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            skipped(test, "not root");
            return None;
        }
        let Some(mount) = cgroup::cgroup2_mount() else {
            skipped(test, "no cgroup2 mount");
            return None;
        };
        let path = mount.join(format!("slate-test-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Some(Root(path))
    }

    /// Whether the kernel lets this root limit `controller`.
    fn has(&self, controller: &str) -> bool {
        std::fs::read_to_string(self.0.join("cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .any(|c| c == controller)
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        cgroup::remove_tree(&self.0);
    }
}

fn skipped(test: &str, why: &str) {
    let reason = if why == "no cgroup2 mount" {
        slate_testskip::Reason::Kernel("cgroup2")
    } else {
        slate_testskip::Reason::Setup(why)
    };
    slate_testskip::skip(test, reason);
}

fn sh(id: &str, script: &str) -> ServiceSpec {
    ServiceSpec::new(id, &["/bin/sh", "-c", script])
}

/// Waits up to `timeout` for `id`'s status to satisfy `ok`.
async fn wait_for(
    sup: &Supervisor,
    id: &str,
    timeout: Duration,
    ok: impl Fn(&Status) -> bool,
) -> Status {
    let deadline = Instant::now() + timeout;
    loop {
        let s = sup.status(id).unwrap();
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "timed out; status: {s:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn messages(s: &Status) -> Vec<String> {
    s.events.iter().map(|e| e.message.clone()).collect()
}

#[tokio::test]
async fn a_crashing_service_restarts_with_growing_delays_up_to_the_cap() {
    let Some(root) = Root::new("crash") else {
        return;
    };
    let sup = Supervisor::new(root.0.clone(), None);
    let mut spec = sh("crash", "echo starting; exit 3");
    spec.restart = Restart {
        policy: RestartPolicy::Always,
        initial: Duration::from_millis(100),
        max: Duration::from_millis(400),
        reset_after: Duration::from_secs(30),
    };
    sup.add(spec).unwrap();
    let s = wait_for(&sup, "crash", Duration::from_secs(10), |s| s.restarts >= 5).await;
    let delays: Vec<String> = messages(&s)
        .into_iter()
        .filter_map(|m| m.strip_prefix("restarting in ").map(str::to_owned))
        .collect();
    assert_eq!(
        delays[..5],
        ["100 ms", "200 ms", "400 ms", "400 ms", "400 ms"],
        "{s:#?}"
    );
    assert!(
        messages(&s).iter().any(|m| m == "exited with code 3"),
        "{s:#?}"
    );
    let (lines, _) = sup.logs("crash").unwrap().tail_and_follow(None);
    assert!(
        lines.iter().filter(|l| *l == "starting").count() >= 5,
        "{lines:?}"
    );
}

#[tokio::test]
async fn stop_kills_a_service_that_ignores_sigterm_together_with_its_children() {
    let Some(root) = Root::new("stubborn") else {
        return;
    };
    let sup = Supervisor::new(root.0.clone(), None);
    let mut spec = sh(
        "stubborn",
        "trap '' TERM; sleep 1000 & echo ready; while true; do sleep 1; done",
    );
    spec.grace = Duration::from_millis(300);
    sup.add(spec).unwrap();
    wait_for(&sup, "stubborn", Duration::from_secs(5), |s| {
        s.state == State::Running
    })
    .await;
    let logs = sup.logs("stubborn").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !logs.tail_and_follow(None).0.contains(&"ready".to_owned()) {
        assert!(Instant::now() < deadline, "the service never said ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let group = root.0.join("stubborn");
    let pids = std::fs::read_to_string(group.join("cgroup.procs")).unwrap();
    assert!(pids.lines().count() >= 2, "the shell and its sleep: {pids}");

    let t = Instant::now();
    sup.command("stubborn", Command::Stop).await.unwrap();
    let s = wait_for(&sup, "stubborn", Duration::from_secs(5), |s| {
        s.state == State::Stopped
    })
    .await;
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "stopped before the grace ran out: {took:?}"
    );
    assert!(
        messages(&s)
            .iter()
            .any(|m| m.contains("SIGKILL to its cgroup")),
        "{s:#?}"
    );
    assert_eq!(
        std::fs::read_to_string(group.join("cgroup.procs")).unwrap(),
        ""
    );
    for pid in pids.lines() {
        assert!(!alive(pid), "pid {pid} outlived the stop");
    }

    // And it starts again on request.
    sup.command("stubborn", Command::Start).await.unwrap();
    wait_for(&sup, "stubborn", Duration::from_secs(5), |s| {
        s.state == State::Running
    })
    .await;
}

/// Running, as opposed to gone or a zombie: the orphaned children are
/// reparented to this machine's PID 1, which reaps them in its own time
/// (on a node, init reaps at once).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after_name = stat.rsplit_once(')')?.1.trim_start().to_owned();
            after_name.chars().next()
        })
        .is_some_and(|state| state != 'Z' && state != 'X')
}

#[tokio::test]
async fn dependencies_hold_a_service_in_waiting() {
    let Some(root) = Root::new("deps") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("network.ready");
    let sup = Supervisor::new(root.0.clone(), None);
    let mut base = sh("base", "sleep 1000");
    base.depends = vec![Condition::File(flag.clone())];
    base.health = Some(HealthCheck {
        probe: Probe::Exec(vec!["true".into()]),
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(1),
    });
    let mut top = sh("top", "sleep 1000");
    top.depends = vec![Condition::Service("base".into())];
    sup.add(top).unwrap();
    sup.add(base).unwrap();

    tokio::time::sleep(Duration::from_millis(500)).await;
    let (b, t) = (sup.status("base").unwrap(), sup.status("top").unwrap());
    assert_eq!((b.state, t.state), (State::Waiting, State::Waiting));
    assert!(messages(&b)[0].contains("network.ready"), "{b:#?}");
    assert_eq!(messages(&t)[0], "waiting for service base");

    std::fs::write(&flag, "").unwrap();
    let t = wait_for(&sup, "top", Duration::from_secs(5), |s| {
        s.state == State::Running
    })
    .await;
    let b = sup.status("base").unwrap();
    assert_eq!(
        b.healthy,
        Some(true),
        "top started before base was healthy: {b:#?}"
    );
    assert!(t.pid.is_some());
}

#[tokio::test]
async fn logs_are_captured_and_followed() {
    let Some(root) = Root::new("logs") else {
        return;
    };
    let sup = Supervisor::new(root.0.clone(), Some(root_logs(&root)));
    sup.add(sh(
        "talker",
        "echo one; echo two >&2; sleep 0.5; echo three; sleep 1000",
    ))
    .unwrap();
    let logs = sup.logs("talker").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut follow = loop {
        let (lines, rx) = logs.tail_and_follow(None);
        if lines.len() >= 2 {
            assert_eq!(lines.len(), 2, "{lines:?}");
            assert!(lines.contains(&"one".to_owned()) && lines.contains(&"two".to_owned()));
            break rx;
        }
        assert!(Instant::now() < deadline, "{lines:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let three = tokio::time::timeout(Duration::from_secs(5), follow.recv())
        .await
        .expect("a followed line")
        .unwrap();
    assert_eq!(three, "three");
    let (tail, _) = logs.tail_and_follow(Some(1));
    assert_eq!(tail, vec!["three".to_owned()]);
    let file = std::fs::read_to_string(root_logs(&root).join("talker.log")).unwrap();
    assert!(file.ends_with("three\n"), "{file}");
}

fn root_logs(root: &Root) -> PathBuf {
    // Beside the test, not in the cgroup tree.
    std::env::temp_dir().join(root.0.file_name().unwrap())
}

#[tokio::test]
async fn bad_services_fail_clearly_without_touching_the_others() {
    let Some(root) = Root::new("bad") else { return };
    let sup = Supervisor::new(root.0.clone(), None);
    let never = Restart {
        policy: RestartPolicy::Never,
        ..Restart::default()
    };
    let mut missing = ServiceSpec::new("missing", &["/nonexistent/bin/etcd", "--flag"]);
    missing.restart = never.clone();
    let mut unprepared = sh("unprepared", "sleep 1000");
    unprepared.restart = never;
    unprepared.prepare = Some(prepare_with(|| {
        Err("writing /var/lib/x/config: no space left on device".into())
    }));
    let mut hanging = sh("hanging", "sleep 1000");
    hanging.health = Some(HealthCheck {
        probe: Probe::Exec(vec!["sleep".into(), "10".into()]),
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(200),
    });
    sup.add(sh("fine", "sleep 1000")).unwrap();
    sup.add(missing).unwrap();
    sup.add(unprepared).unwrap();
    sup.add(hanging).unwrap();

    let m = wait_for(&sup, "missing", Duration::from_secs(5), |s| {
        s.state == State::Failed
    })
    .await;
    assert!(
        messages(&m)
            .iter()
            .any(|e| e.contains("starting /nonexistent/bin/etcd") && e.contains("No such file")),
        "{m:#?}"
    );
    let u = wait_for(&sup, "unprepared", Duration::from_secs(5), |s| {
        s.state == State::Failed
    })
    .await;
    assert!(
        messages(&u)
            .contains(&"preparing: writing /var/lib/x/config: no space left on device".to_owned()),
        "{u:#?}"
    );
    let h = wait_for(&sup, "hanging", Duration::from_secs(5), |s| {
        s.healthy == Some(false)
    })
    .await;
    assert_eq!(h.state, State::Running);
    assert!(
        messages(&h)
            .iter()
            .any(|e| e.starts_with("unhealthy: no answer within")),
        "{h:#?}"
    );
    let f = sup.status("fine").unwrap();
    assert_eq!((f.state, f.restarts), (State::Running, 0));
    assert!(
        sup.status("nope")
            .unwrap_err()
            .to_string()
            .contains("fine, hanging, missing, unprepared")
    );
}

#[tokio::test]
async fn a_leaking_service_is_held_by_its_memory_limit() {
    let Some(root) = Root::new("leak") else {
        return;
    };
    if !root.has("memory") || !root.has("pids") {
        // The host's kernel keeps them on cgroup v1 (a hybrid hierarchy).
        slate_testskip::skip(
            "a_leaking_service_is_held_by_its_memory_limit",
            slate_testskip::Reason::Kernel("cgroup2 memory and pids controllers"),
        );
        return;
    }
    let sup = Supervisor::new(root.0.clone(), None);
    // Doubles a shell variable until the kernel stops it.
    let mut leak = sh("leak", "x=aaaaaaaa; while true; do x=$x$x; done");
    leak.limits = Limits {
        memory_max: Some(32 << 20),
        pids_max: Some(16),
        ..Limits::default()
    };
    leak.restart.policy = RestartPolicy::Never;
    let mut bomb = sh("bomb", "for i in $(seq 100); do sleep 1000 & done; wait");
    bomb.limits.pids_max = Some(8);
    sup.add(leak).unwrap();
    sup.add(bomb).unwrap();
    let s = wait_for(&sup, "leak", Duration::from_secs(30), |s| {
        s.state == State::Failed
    })
    .await;
    assert!(
        messages(&s).iter().any(|m| m.contains("out of memory")),
        "{s:#?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let procs = std::fs::read_to_string(root.0.join("bomb/cgroup.procs")).unwrap();
    assert!(procs.lines().count() <= 8, "{procs}");
}
