//! Probes run from inside a namespace of the lab: TCP echo, a UDP source
//! as a peer sees it, an HTTP GET; and the echo server every node runs.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::ECHO_PORT;
use crate::netns;

/// Runs `f` on a new thread that has entered namespace `ns`; the thread
/// ends with `f`, so no thread of the test stays in a namespace.
pub fn in_namespace<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        netns::enter(&ns).unwrap_or_else(|e| panic!("entering {ns}: {e}"));
        f()
    })
    .join()
    .unwrap_or_else(|_| panic!("a thread in a namespace panicked"))
}

/// TCP echo server on `[::]:7` (dual-stack) in a namespace: one thread
/// accepting, one per connection; stopped on drop.
pub(super) struct EchoServer {
    pub(super) stop: Arc<AtomicBool>,
    pub(super) clients: Arc<Mutex<Vec<SocketAddr>>>,
    pub(super) thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    pub(super) fn start(ns: &str) -> EchoServer {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (ns, stop2, clients2) = (ns.to_owned(), stop.clone(), clients.clone());
        let thread = std::thread::spawn(move || {
            let listener = netns::enter(&ns)
                .and_then(|()| TcpListener::bind((Ipv6Addr::UNSPECIFIED, ECHO_PORT)))
                .and_then(|l| l.set_nonblocking(true).map(|()| l));
            let listener = match listener {
                Ok(l) => {
                    let _ = ready_tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("echo server in {ns}: {e}")));
                    return;
                }
            };
            // Polled, so that drop can stop it (and the namespace is not
            // kept alive by its socket).
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut conn, from)) => {
                        clients2
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(from);
                        std::thread::spawn(move || {
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                            let mut buf = [0u8; 4096];
                            while let Ok(n) = conn.read(&mut buf) {
                                if n == 0 || conn.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        ready_rx
            .recv()
            .expect("the echo thread reports")
            .unwrap_or_else(|e| panic!("{e}"));
        EchoServer {
            stop,
            clients,
            thread: Some(thread),
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// From namespace `ns`, sends a line to `to`'s echo server and checks it
/// comes back; `Err` says what failed.
pub fn echo(ns: &str, to: SocketAddr, timeout: Duration) -> Result<(), String> {
    let payload = format!("hello {to} from {ns}\n");
    let ns2 = ns.to_owned();
    in_namespace(ns, move || -> Result<(), String> {
        let fail = |what: &str, e: std::io::Error| format!("{ns2} -> {to}: {what}: {e}");
        let mut conn = TcpStream::connect_timeout(&to, timeout).map_err(|e| fail("connect", e))?;
        conn.set_read_timeout(Some(timeout))
            .map_err(|e| fail("timeout", e))?;
        conn.write_all(payload.as_bytes())
            .map_err(|e| fail("write", e))?;
        let mut back = vec![0u8; payload.len()];
        conn.read_exact(&mut back).map_err(|e| fail("read", e))?;
        if back == payload.as_bytes() {
            Ok(())
        } else {
            Err(format!("{ns2} -> {to}: echoed {back:?}"))
        }
    })
}

/// One UDP datagram from port `from_port` in namespace `from_ns` to `to`
/// (port 9999), received in namespace `to_ns`: the source address the
/// receiver saw.
pub fn udp_source_seen(
    from_ns: &str,
    from_port: u16,
    to_ns: &str,
    to: Ipv4Addr,
) -> Result<SocketAddr, String> {
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let to_ns = to_ns.to_owned();
    let receiver = std::thread::spawn(move || -> Result<SocketAddr, String> {
        let socket = netns::enter(&to_ns)
            .and_then(|()| std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 9999)))
            .and_then(|s| s.set_read_timeout(Some(Duration::from_secs(3))).map(|()| s));
        let socket = match socket {
            Ok(s) => {
                let _ = bound_tx.send(());
                s
            }
            Err(e) => return Err(format!("receiving in {to_ns}: {e}")),
        };
        let mut buf = [0u8; 64];
        let (_, from) = socket
            .recv_from(&mut buf)
            .map_err(|e| format!("receiving in {to_ns}: {e}"))?;
        Ok(from)
    });
    if bound_rx.recv().is_ok() {
        in_namespace(from_ns, move || {
            std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, from_port))
                .and_then(|s| s.send_to(b"hello", (to, 9999)))
                .map_err(|e| format!("sending: {e}"))
        })?;
    }
    receiver.join().expect("the receiving thread")
}

/// From namespace `ns`, `GET path` on `to`; the whole answer.
pub fn http_get(ns: &str, to: SocketAddr, path: &str) -> Result<String, String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n\r\n");
    in_namespace(ns, move || -> Result<String, String> {
        let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(2))
            .map_err(|e| format!("connecting to {to}: {e}"))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        conn.write_all(request.as_bytes())
            .map_err(|e| format!("sending to {to}: {e}"))?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer)
            .map_err(|e| format!("reading from {to}: {e}"))?;
        Ok(answer)
    })
}
