//! Host test of the real spawn, kill, signal wait and `waitpid(-1)` reaper.
//!
//! `harness = false`: this is a plain single-threaded process, as PID 1 is.
//! It becomes a child subreaper so orphans are reparented to it as they
//! would be to init. Every wait is bounded by a deadline; on failure it
//! kills what it started and exits non-zero, so it cannot hang.

use std::collections::HashMap;
use std::process::exit;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use slate_init::daemons::Privileges;
use slate_init::reaper::{ExitStatus, block_all_signals, reap_all, wait_signal};
use slate_init::spawn::{SpawnError, Stdio, spawn};

const DEADLINE: Duration = Duration::from_secs(10);

fn main() {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        slate_testskip::skip(
            "reaper_host",
            slate_testskip::Reason::Privilege("PR_SET_CHILD_SUBREAPER"),
        );
        return;
    }
    block_all_signals().expect("blocking signals");
    // Must not reach the daemons.
    // SAFETY: single-threaded process, no concurrent environment access.
    unsafe { std::env::set_var("RUST_LOG", "trace") };

    let stdio = Stdio {
        stdin: "/dev/null".into(),
        output: "/dev/stderr".into(),
    };
    let mut expect: HashMap<Pid, ExitStatus> = HashMap::new();

    // 1. Exits 3 and leaves an orphan behind that exits 5 a bit later.
    let sh = spawn(
        "/bin/sh",
        &["-c", "(sleep 0.2; exit 5) & exit 3"],
        &stdio,
        Privileges::Full,
    )
    .expect("spawning sh");
    expect.insert(sh, ExitStatus::Exited(3));

    // 2. The daemon's environment, session, signal mask and dispositions
    // (standard signals only: cargo's test runner ignores glibc's internal
    // signals 32 and 33, which a process cannot reset).
    let check = "[ \"$PATH\" = /usr/bin:/sbin ] || exit 10; \
                 [ -z \"$RUST_LOG\" ] || exit 11; \
                 [ \"$(cut -d' ' -f6 /proc/$$/stat)\" = \"$$\" ] || exit 12; \
                 while read -r k v; do [ \"$k\" = SigBlk: ] && { [ \"$v\" = 0000000000000000 ] || exit 13; }; done < /proc/$$/status; \
                 ign=$(sed -n 's/^SigIgn:[[:space:]]*//p' /proc/$$/status); \
                 [ $((0x$ign & 0x7fffffff)) -eq 0 ] || exit 14; \
                 [ -t 0 ] && exit 15; exit 0";
    let env =
        spawn("/bin/sh", &["-c", check], &stdio, Privileges::Full).expect("spawning the env check");
    expect.insert(env, ExitStatus::Exited(0));

    // 2b. A daemon kept to one capability, as networkd and apid are: that
    // one is all it holds and may ever get (bounding set), no_new_privs is
    // set, its hard open-file limit is raised, and the seccomp filter
    // refuses a new user namespace (which needs no capability otherwise).
    // Cutting the bounding set takes root (CAP_SETPCAP), as init has.
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        let check = "st=/proc/$$/status; \
                     grep -q '^CapEff:[[:space:]]*0000000000001000$' $st || exit 20; \
                     grep -q '^CapBnd:[[:space:]]*0000000000001000$' $st || exit 21; \
                     grep -q '^NoNewPrivs:[[:space:]]*1$' $st || exit 22; \
                     [ \"$(ulimit -Hn)\" = HARD ] || exit 23; \
                     grep -q '^Seccomp:[[:space:]]*2$' $st || exit 24; \
                     [ -x /usr/bin/unshare ] || exit 25; \
                     /usr/bin/unshare -U true 2>/dev/null && exit 26; exit 0";
        // Raising a hard limit takes sys_resource, which init has and a
        // container running this test may not: then only lowering works.
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let cap_eff = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0);
        let hard = if cap_eff & (1 << 24) != 0 {
            slate_init::spawn::NOFILE_HARD.to_string()
        } else {
            let mut now = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit into a valid struct.
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) };
            now.rlim_max.min(slate_init::spawn::NOFILE_HARD).to_string()
        };
        let check = check.replace("HARD", &hard);
        let only = spawn(
            "/bin/sh",
            &["-c", &check],
            &stdio,
            Privileges::Only(&["net_admin"]),
        )
        .expect("spawning the privileges check");
        expect.insert(only, ExitStatus::Exited(0));

        // 2c. A daemon run as its own user, as apid is, read from outside
        // (its allow-list has no fork or wait, so no shell runs under it):
        // that uid and gid for real, effective, saved and fs ids, no
        // supplementary group, no capability left anywhere, no_new_privs,
        // and three filters (deny-list, clone3, allow-list).
        let user = spawn(
            "/bin/sleep",
            &["30"],
            &stdio,
            Privileges::User {
                uid: 60600,
                gid: 60601,
            },
        )
        .expect("spawning a process as a user");
        let status = std::fs::read_to_string(format!("/proc/{user}/status")).unwrap_or_default();
        let field = |name: &str| -> String {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        };
        let mut wrong = Vec::new();
        for (name, want) in [
            ("Uid:", "60600 60600 60600 60600"),
            ("Gid:", "60601 60601 60601 60601"),
            ("Groups:", ""),
            ("CapInh:", "0000000000000000"),
            ("CapPrm:", "0000000000000000"),
            ("CapEff:", "0000000000000000"),
            ("CapBnd:", "0000000000000000"),
            ("CapAmb:", "0000000000000000"),
            ("NoNewPrivs:", "1"),
            ("Seccomp:", "2"),
            ("Seccomp_filters:", "3"),
        ] {
            let got = field(name);
            if got != want {
                wrong.push(format!("{name} {got:?}, want {want:?}"));
            }
        }
        kill(user, Signal::SIGKILL).expect("kill");
        if !wrong.is_empty() {
            fail(&format!("the user's process: {}", wrong.join("; ")), &[]);
        }
        expect.insert(
            user,
            ExitStatus::Signaled {
                signal: Signal::SIGKILL,
                core_dumped: false,
            },
        );
    } else {
        slate_testskip::skip(
            "reaper_host: daemon privileges",
            slate_testskip::Reason::Privilege("root (CAP_SETPCAP)"),
        );
    }

    // 3. A long sleeper, ended with SIGTERM.
    let sleeper = spawn("/bin/sleep", &["30"], &stdio, Privileges::Full).expect("spawning sleep");
    kill(sleeper, Signal::SIGTERM).expect("kill");
    expect.insert(
        sleeper,
        ExitStatus::Signaled {
            signal: Signal::SIGTERM,
            core_dumped: false,
        },
    );

    // 4. A missing binary: the error comes back from spawn; the child that
    // failed to exec is reaped like any other (exit 127).
    match spawn("/nonexistent/machined", &[], &stdio, Privileges::Full) {
        Err(SpawnError::Exec {
            pid,
            source: Errno::ENOENT,
            ..
        }) => {
            expect.insert(pid, ExitStatus::Exited(127));
        }
        other => fail(&format!("spawning a missing binary: {other:?}"), &[sleeper]),
    }

    let start = Instant::now();
    let mut orphans = Vec::new();
    loop {
        let reaped = reap_all();
        for (pid, status) in reaped.exits {
            match expect.remove(&pid) {
                Some(want) if want == status => {}
                Some(want) => fail(&format!("pid {pid}: {status}, want {want}"), &[sleeper]),
                None => orphans.push((pid, status)),
            }
        }
        if reaped.no_children {
            break;
        }
        let elapsed = start.elapsed();
        if elapsed >= DEADLINE {
            fail(
                &format!("timed out; still expecting {expect:?}"),
                &[sleeper],
            );
        }
        match wait_signal(DEADLINE - elapsed) {
            None | Some(Signal::SIGCHLD) => {}
            Some(s) => fail(&format!("unexpected {s}"), &[sleeper]),
        }
    }
    if !expect.is_empty() {
        fail(&format!("ECHILD but still expecting {expect:?}"), &[]);
    }
    if orphans.len() != 1 || orphans[0].1 != ExitStatus::Exited(5) {
        fail(
            &format!("orphans: {orphans:?}, want one that exited with 5"),
            &[],
        );
    }
    println!("reaper_host: ok (4 children and 1 reparented orphan reaped, no children left)");
}

fn fail(msg: &str, kill_these: &[Pid]) -> ! {
    for pid in kill_these {
        let _ = kill(*pid, Signal::SIGKILL);
    }
    eprintln!("reaper_host: FAILED: {msg}");
    exit(1);
}
