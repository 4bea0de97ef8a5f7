//! Health probes. Each runs within the check's timeout; a probe that hangs
//! is a failed probe, never a hung supervisor.

use std::time::Duration;

use super::spec::Probe;

/// Runs `probe` once; `Err` says why it failed.
pub async fn check(probe: &Probe, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, run(probe)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

async fn run(probe: &Probe) -> Result<(), String> {
    match probe {
        Probe::Tcp(addr) => tokio::net::TcpStream::connect(addr)
            .await
            .map(drop)
            .map_err(|e| format!("connecting to {addr}: {e}")),
        Probe::Unix(path) => tokio::net::UnixStream::connect(path)
            .await
            .map(drop)
            .map_err(|e| format!("connecting to {}: {e}", path.display())),
        Probe::Http { addr, path } => http_get(addr, path).await,
        Probe::Exec(argv) => {
            let (program, args) = argv.split_first().ok_or("empty command")?;
            let status = tokio::process::Command::new(program)
                .args(args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                // A probe cut off by the timeout must not linger.
                .kill_on_drop(true)
                .status()
                .await
                .map_err(|e| format!("running {program}: {e}"))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("{program} {status}"))
            }
        }
    }
}

/// `GET http://addr/path` with machined's HTTP client ([`crate::url`]);
/// healthy on 200.
async fn http_get(addr: &str, path: &str) -> Result<(), String> {
    let url = format!("http://{addr}{path}");
    crate::url::fetch(&url)
        .await
        .map(drop)
        .map_err(|e| format!("{url}: {}", slate_common::error::chain(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn http_status_decides_and_a_silent_server_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let answers = [
                &b"HTTP/1.1 200 OK\r\n\r\nok"[..],
                b"HTTP/1.1 503 Nope\r\n\r\n",
                b"",
            ];
            for answer in answers {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await;
                if answer.is_empty() {
                    // Hang: say nothing, keep the connection.
                    tokio::time::sleep(Duration::from_secs(5)).await;
                } else {
                    s.write_all(answer).await.unwrap();
                }
            }
        });
        let probe = Probe::Http {
            addr: addr.clone(),
            path: "/healthz".into(),
        };
        let t = Duration::from_millis(500);
        assert_eq!(check(&probe, t).await, Ok(()));
        assert!(check(&probe, t).await.unwrap_err().contains("503"));
        assert!(
            check(&probe, t)
                .await
                .unwrap_err()
                .contains("no answer within")
        );
    }

    #[tokio::test]
    async fn exec_and_tcp_probes() {
        assert_eq!(
            check(&Probe::Exec(vec!["true".into()]), Duration::from_secs(5)).await,
            Ok(())
        );
        assert!(
            check(&Probe::Exec(vec!["false".into()]), Duration::from_secs(5))
                .await
                .is_err()
        );
        assert!(
            check(&Probe::Tcp("127.0.0.1:1".into()), Duration::from_secs(5))
                .await
                .is_err()
        );
    }
}
