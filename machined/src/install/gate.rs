//! The health gate: a slot booted on trial becomes `good` only when the
//! node is healthy within [`TIMEOUT`]; otherwise it is marked `failed` and
//! the node reboots, and GRUB (whose one-shot switch is already spent)
//! boots the previous slot. Bottlerocket rolls back only when the new image
//! does not boot at all; a node that boots but cannot serve is as broken.
//!
//! Healthy means: the machine config is loaded, apid accepts connections,
//! etcd is up and healthy where it runs, and kubelet is up where it runs.

use std::time::Duration;

/// How long a new slot has to become healthy. A control-plane node's etcd
/// rejoins within seconds; kubelet's first start may pull nothing (the
/// images are in the layer). Generous, because a false rollback costs a
/// reboot and the upgrade.
pub const TIMEOUT: Duration = Duration::from_secs(300);
/// How often the checks run.
pub const INTERVAL: Duration = Duration::from_secs(2);

/// One check's answer: `Err` says what is not healthy yet.
pub type Check = Result<(), String>;

/// The first failing check of a round, if any.
pub fn verdict(checks: &[(&str, Check)]) -> Option<String> {
    checks
        .iter()
        .find_map(|(name, c)| c.as_ref().err().map(|why| format!("{name}: {why}")))
}

/// Runs `round` every `interval` until it passes (Ok) or `timeout` passes
/// (Err with the last round's failure).
pub async fn wait<F, Fut>(timeout: Duration, interval: Duration, mut round: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Vec<(&'static str, Check)>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let checks = round().await;
        let Some(why) = verdict(&checks) else {
            return Ok(());
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "not healthy {}s after booting: {why}",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failing_check_is_the_verdict() {
        assert_eq!(verdict(&[("config", Ok(())), ("apid", Ok(()))]), None);
        assert_eq!(
            verdict(&[
                ("config", Ok(())),
                ("etcd", Err("not running".into())),
                ("kubelet", Err("x".into()))
            ]),
            Some("etcd: not running".into())
        );
    }

    const TICK: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn a_node_that_stays_unhealthy_fails_the_gate_naming_why() {
        let err = wait(Duration::from_millis(20), TICK, || async {
            vec![("etcd", Err("unhealthy".to_owned()))]
        })
        .await
        .unwrap_err();
        assert!(err.contains("etcd: unhealthy"), "{err}");
    }

    #[tokio::test]
    async fn a_node_that_becomes_healthy_passes() {
        let mut rounds = 0;
        wait(Duration::from_secs(10), TICK, || {
            rounds += 1;
            let r = rounds;
            async move {
                if r < 3 {
                    vec![("apid", Err("refused".to_owned()))]
                } else {
                    vec![("apid", Ok(()))]
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(rounds, 3);
    }
}
