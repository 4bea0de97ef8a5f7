//! Waiting for what a user would wait for: a check retried until it holds.

use std::time::{Duration, Instant};

/// Retries `check` every `every` until it returns true; after `timeout`
/// fails with `what` and the text `check` returned last.
pub async fn eventually(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> (bool, String),
) {
    let deadline = Instant::now() + timeout;
    while !holds(what, timeout, deadline, &mut check) {
        tokio::time::sleep(every).await;
    }
}

/// [`eventually`] for tests without a runtime, whose checks block (a
/// thread entering a namespace, a client with its own runtime).
pub fn eventually_blocking(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> (bool, String),
) {
    let deadline = Instant::now() + timeout;
    while !holds(what, timeout, deadline, &mut check) {
        std::thread::sleep(every);
    }
}

/// One try of `check`: whether it holds; past `deadline` a failure that
/// names `what` and the text `check` returned.
fn holds(
    what: &str,
    timeout: Duration,
    deadline: Instant,
    check: &mut impl FnMut() -> (bool, String),
) -> bool {
    let (ok, last) = check();
    assert!(
        ok || Instant::now() < deadline,
        "{what}: not after {timeout:?}; last:\n{last}"
    );
    ok
}
