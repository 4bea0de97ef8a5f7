//! One task per service: wait for dependencies, prepare, run the process
//! in its cgroup, watch its health, and restart it with capped exponential
//! backoff, while taking start/stop/restart commands at every step.

use std::os::fd::AsRawFd as _;
use std::os::unix::process::ExitStatusExt as _;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;

use super::cgroup::Cgroup;
use super::logs::{LogBuffer, MAX_LINE};
use super::spec::{Condition, KillMode, RestartPolicy, ServiceSpec};
use super::status::State;
use super::{Service, Shared, health};

/// What the API asks of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Start,
    Stop,
    Restart,
}

/// How a run ended.
enum Outcome {
    /// The process ended by itself.
    Exited { success: bool, ran_for: Duration },
    /// It never ran (prepare, cgroup or exec failed); already recorded.
    NotStarted,
    /// A Stop or Restart command ended it.
    Commanded(Command),
}

/// How often a service is probed until its first healthy answer.
const FIRST_HEALTH_POLL: Duration = Duration::from_millis(250);
/// How long after SIGKILL to wait for the cgroup to empty.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// File conditions are looked at this often: the hand-off files appear
/// once per boot, and a poll this slow costs nothing.
const FILE_POLL: Duration = Duration::from_millis(200);

pub async fn run(
    shared: Arc<Shared>,
    service: Arc<Service>,
    mut commands: mpsc::Receiver<Command>,
) {
    let spec = &service.spec;
    let mut want_running = true;
    let mut failures: u32 = 0;
    loop {
        if !want_running {
            match commands.recv().await {
                Some(Command::Start | Command::Restart) => {
                    want_running = true;
                    failures = 0;
                }
                Some(Command::Stop) => continue,
                None => return,
            }
        }
        if let Some(cmd) = wait_for_dependencies(&shared, &service, &mut commands).await {
            match cmd {
                Command::Stop => {
                    want_running = false;
                    service.record(State::Stopped, "stopped while waiting");
                }
                Command::Start | Command::Restart => {}
            }
            continue;
        }
        let outcome = run_once(&shared, &service, &mut commands).await;
        let (failed, ran_for) = match outcome {
            Outcome::Commanded(Command::Stop) => {
                want_running = false;
                service.record(State::Stopped, "stopped on request");
                continue;
            }
            Outcome::Commanded(_) => {
                failures = 0;
                continue;
            }
            Outcome::Exited { success, ran_for } => (!success, ran_for),
            Outcome::NotStarted => (true, Duration::ZERO),
        };
        let again = match spec.restart.policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => failed,
            RestartPolicy::Never => false,
        };
        if !again {
            want_running = false;
            continue;
        }
        if ran_for >= spec.restart.reset_after {
            failures = 0;
        }
        let delay = backoff(spec, failures);
        failures = failures.saturating_add(1);
        service.note(format!("restarting in {}", human(delay)));
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            cmd = commands.recv() => match cmd {
                Some(Command::Stop) => {
                    want_running = false;
                    service.record(State::Stopped, "stopped on request");
                    continue;
                }
                Some(_) => failures = 0,
                None => return,
            }
        }
        service.update(|s| s.restarts += 1);
    }
}

/// `initial · 2^failures`, capped at `max`.
fn backoff(spec: &ServiceSpec, failures: u32) -> Duration {
    spec.restart
        .initial
        .saturating_mul(1u32 << failures.min(20))
        .min(spec.restart.max)
}

fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Waits until every dependency holds; a command cuts the wait short.
async fn wait_for_dependencies(
    shared: &Shared,
    service: &Service,
    commands: &mut mpsc::Receiver<Command>,
) -> Option<Command> {
    let mut changes = shared.changed.subscribe();
    let mut last: Option<String> = None;
    loop {
        let missing: Vec<String> = service
            .spec
            .depends
            .iter()
            .filter(|c| !holds(shared, c))
            .map(ToString::to_string)
            .collect();
        if missing.is_empty() {
            return None;
        }
        let why = format!("waiting for {}", missing.join(", "));
        if last.as_deref() != Some(why.as_str()) {
            service.record(State::Waiting, why.clone());
            last = Some(why);
        }
        tokio::select! {
            _ = changes.changed() => {}
            () = tokio::time::sleep(FILE_POLL) => {}
            cmd = commands.recv() => return Some(cmd.unwrap_or(Command::Stop)),
        }
    }
}

fn holds(shared: &Shared, condition: &Condition) -> bool {
    match condition {
        Condition::File(path) => path.exists(),
        Condition::Service(id) => shared.status(id).is_some_and(|s| s.is_up()),
    }
}

async fn run_once(
    shared: &Shared,
    service: &Arc<Service>,
    commands: &mut mpsc::Receiver<Command>,
) -> Outcome {
    let spec = &service.spec;
    let extra_args = match prepare(service, commands).await {
        Ok(args) => args,
        Err(outcome) => return outcome,
    };
    let Some(cgroup) = fresh_cgroup(shared, service).await else {
        return Outcome::NotStarted;
    };
    let mut child = match spawn(spec, &extra_args, &cgroup) {
        Ok(child) => child,
        Err(e) => {
            service.record(State::Failed, e);
            return Outcome::NotStarted;
        }
    };
    let pid = child.id().unwrap_or(0);
    if let Some(adj) = spec.limits.oom_score_adj
        && let Err(e) = std::fs::write(format!("/proc/{pid}/oom_score_adj"), adj.to_string())
    {
        service.note(format!("oom_score_adj = {adj}: {e}"));
    }
    let oom_before = cgroup.oom_kills();
    service.update(|s| {
        s.pid = Some(pid);
        s.healthy = None;
        s.record(State::Running, format!("started, pid {pid}"));
    });
    shared.notify();
    let started = Instant::now();
    let pumps = [
        child
            .stdout
            .take()
            .map(|o| tokio::spawn(pump(o, service.logs.clone()))),
        child
            .stderr
            .take()
            .map(|o| tokio::spawn(pump(o, service.logs.clone()))),
    ];
    let outcome = tokio::select! {
        status = child.wait() => {
            let ran_for = started.elapsed();
            let success = record_exit(status, &cgroup, oom_before, service).await;
            Outcome::Exited { success, ran_for }
        }
        cmd = next_command(commands) => {
            service.note(format!("stopping (SIGTERM, {} grace)", human(spec.grace)));
            terminate(&mut child, &cgroup, spec, service).await;
            service.update(|s| {
                s.pid = None;
                s.healthy = None;
            });
            Outcome::Commanded(cmd)
        }
        () = watch_health(service) => unreachable!("the health loop never ends"),
    };
    shared.notify();
    for pump in pumps.into_iter().flatten() {
        // EOF came with the last writer's death; do not wait for ever on
        // a descriptor passed somewhere else.
        let _ = tokio::time::timeout(Duration::from_secs(1), pump).await;
    }
    outcome
}

/// Runs the service's prepare step, if it has one, for the extra
/// arguments it hands the command. `Err` is how the run ends instead: a
/// command cut the step short, or it failed (already recorded).
async fn prepare(
    service: &Arc<Service>,
    commands: &mut mpsc::Receiver<Command>,
) -> Result<Vec<String>, Outcome> {
    let Some(prepare) = &service.spec.prepare else {
        return Ok(Vec::new());
    };
    service.record(State::Preparing, "writing its configuration");
    let noter = service.clone();
    let progress = super::spec::Progress::new(move |m| noter.note(m));
    let result = tokio::select! {
        r = prepare(progress) => r,
        cmd = commands.recv() => return Err(Outcome::Commanded(cmd.unwrap_or(Command::Stop))),
    };
    result.map_err(|e| {
        service.record(State::Failed, format!("preparing: {e}"));
        Outcome::NotStarted
    })
}

/// The service's cgroup, ready for a new process; `None` (recorded) when
/// it cannot be made.
async fn fresh_cgroup(shared: &Shared, service: &Service) -> Option<Cgroup> {
    let spec = &service.spec;
    let cgroup = match Cgroup::create(&shared.cgroup_root, &spec.id, &spec.limits) {
        Ok((cgroup, problems)) => {
            for p in problems {
                service.note(p);
            }
            cgroup
        }
        Err(e) => {
            service.record(State::Failed, slate_common::error::chain(&e));
            return None;
        }
    };
    // Leftovers of an earlier run (or of a machined that was restarted)
    // must not share the new process's cgroup; under KillMode::Process
    // they are meant to stay (containerd's shims).
    if spec.kill_mode == KillMode::ControlGroup && !cgroup.pids().is_empty() {
        service.note("killing processes left from an earlier run");
        cgroup.kill_all(KILL_WAIT).await;
    }
    Some(cgroup)
}

/// Records how the process ended by itself, blaming the memory limit
/// when the cgroup saw an OOM kill since `oom_before`; whether it
/// succeeded.
async fn record_exit(
    status: std::io::Result<std::process::ExitStatus>,
    cgroup: &Cgroup,
    oom_before: u64,
    service: &Service,
) -> bool {
    let (success, mut message) = match status {
        Ok(s) if s.success() => (true, "exited with code 0".to_owned()),
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => (false, format!("exited with code {code}")),
            (None, Some(sig)) => (false, format!("killed by signal {}", signal_name(sig))),
            _ => (false, format!("ended: {s}")),
        },
        Err(e) => (false, format!("waiting for it: {e}")),
    };
    if cgroup.oom_kills() > oom_before {
        message.push_str(" (out of memory: killed at its memory limit)");
    }
    // Children of a process that ended stay nowhere (but see
    // KillMode::Process).
    if service.spec.kill_mode == KillMode::ControlGroup {
        cgroup.kill_all(KILL_WAIT).await;
    }
    let state = if success {
        State::Finished
    } else {
        State::Failed
    };
    service.update(|s| {
        s.pid = None;
        s.healthy = None;
        s.record(state, message);
    });
    success
}

/// The next Stop or Restart (a Start for a running service is a no-op).
async fn next_command(commands: &mut mpsc::Receiver<Command>) -> Command {
    loop {
        match commands.recv().await {
            Some(Command::Start) => continue,
            Some(cmd) => return cmd,
            // The supervisor is gone: stop.
            None => return Command::Stop,
        }
    }
}

fn spawn(
    spec: &ServiceSpec,
    extra_args: &[String],
    cgroup: &Cgroup,
) -> Result<tokio::process::Child, String> {
    let (program, args) = spec.command.split_first().ok_or("no command")?;
    let procs = cgroup
        .procs_file()
        .map_err(|e| slate_common::error::chain(&e))?;
    let fd = procs.as_raw_fd();
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .args(extra_args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = &spec.working_dir {
        cmd.current_dir(dir);
    }
    // SAFETY: between fork and exec only async-signal-safe calls: setsid
    // and write on a descriptor opened before the fork. Writing "0" moves
    // the writing process (the child) into the cgroup before it runs
    // anything of the service.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| format!("starting {program}: {e}"));
    drop(procs);
    child
}

/// SIGTERM, up to the grace period for it to end, then SIGKILL: to the
/// whole cgroup, or under KillMode::Process to the main process only.
async fn terminate(
    child: &mut tokio::process::Child,
    cgroup: &Cgroup,
    spec: &ServiceSpec,
    service: &Service,
) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let ended = tokio::time::timeout(spec.grace, child.wait()).await.is_ok();
    match spec.kill_mode {
        KillMode::ControlGroup => {
            if !ended {
                service.note(format!(
                    "still running after {}: SIGKILL to its cgroup",
                    human(spec.grace)
                ));
            }
            // Children that ignored SIGTERM, or a main process that did.
            cgroup.kill_all(KILL_WAIT).await;
        }
        KillMode::Process if !ended => {
            service.note(format!(
                "still running after {}: SIGKILL",
                human(spec.grace)
            ));
            let _ = child.start_kill();
        }
        KillMode::Process => {}
    }
    let _ = child.wait().await;
}

/// Probes health for as long as the process runs (the caller drops this
/// future when it ends); records each change.
async fn watch_health(service: &Service) {
    let Some(check) = service.spec.health.clone() else {
        return std::future::pending().await;
    };
    // Until it is healthy the first time, probe often: services waiting
    // for this one (kubelet for containerd) start that much sooner, and a
    // probe of a process still starting costs little.
    let mut ever_healthy = false;
    loop {
        let result = health::check(&check.probe, check.timeout).await;
        ever_healthy |= result.is_ok();
        let healthy = result.is_ok();
        let changed = service.update(|s| {
            if s.healthy == Some(healthy) {
                return false;
            }
            s.healthy = Some(healthy);
            match &result {
                Ok(()) => s.record(State::Running, "healthy"),
                Err(why) => s.record(State::Running, format!("unhealthy: {why}")),
            }
            true
        });
        if changed {
            service.shared_notify();
        }
        let wait = if ever_healthy {
            check.interval
        } else {
            check.interval.min(FIRST_HEALTH_POLL)
        };
        tokio::time::sleep(wait).await;
    }
}

/// Copies a pipe into the log, line by line; a line longer than
/// [`MAX_LINE`] is split rather than buffered without bound.
async fn pump(mut pipe: impl tokio::io::AsyncRead + Unpin, logs: LogBuffer) {
    let mut buf = vec![0u8; 8192];
    let mut line: Vec<u8> = Vec::new();
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' || line.len() >= MAX_LINE {
                logs.push(String::from_utf8_lossy(&line).trim_end_matches('\r'));
                line.clear();
                if b == b'\n' {
                    continue;
                }
            }
            line.push(b);
        }
    }
    if !line.is_empty() {
        logs.push(&String::from_utf8_lossy(&line));
    }
}

fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map_or_else(|_| sig.to_string(), |s| s.as_str().to_owned())
}
