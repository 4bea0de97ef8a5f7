//! Stand-in API servers for the API balancer's tests and benchmark.
//!
//! A [`Lab`] is a client namespace joined by one veth pair to each of N
//! backend namespaces (`10.97.I.1` on the client side, `10.97.I.2` on the
//! backend's). Each backend is a small HTTPS server in this process, its
//! listening socket made inside its namespace: `GET /readyz` answers `ok`
//! (or 500 when told not ready), any other path answers the backend's
//! name, so a client knows who served it; keep-alive, an optional delay
//! before each answer, and a kill that closes the port and every
//! connection, as a crashed API server would. Certificates come from a
//! test CA (slate-pki): clients verify them, end to end through the
//! balancer.
//!
//! Root only, needs `ip`. Everything goes away on drop.
// A test fixture: a panic here fails the test that set it up.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use slate_balancer::{Balancer, Settings, Target};
use slate_pki as pki;
use slate_pki::tls;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

use crate::netns::{self, Namespaces};

/// The port the stand-ins listen on, kube-apiserver's.
pub const PORT: u16 = 6443;
/// The name every stand-in's certificate holds, for the clients to check.
pub const SERVER_NAME: &str = "kubernetes";
/// Every client socket operation gives up after this: a test never hangs.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the lab cannot run here, if it cannot.
pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    if !["/usr/sbin/ip", "/usr/bin/ip", "/sbin/ip", "/bin/ip"]
        .iter()
        .any(|p| std::path::Path::new(p).exists())
    {
        return Some("ip (iproute2) not installed".into());
    }
    None
}

/// One stand-in's counters and switches.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    /// Requests other than `/readyz` answered (client traffic).
    pub served: AtomicU64,
    /// Wait before each answer, in microseconds.
    delay_us: AtomicU64,
    ready: AtomicBool,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Backend {
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }

    pub fn set_delay(&self, delay: Duration) {
        self.delay_us
            .store(delay.as_micros() as u64, Ordering::SeqCst);
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Closes the port and every open connection: what a crashed API
    /// server leaves (new connects are refused).
    /// Returns once the port is closed and the connections are gone.
    pub fn kill(&self) {
        let tasks: Vec<_> = self.tasks.lock().unwrap().drain(..).collect();
        for t in &tasks {
            t.abort();
        }
        let deadline = std::time::Instant::now() + IO_TIMEOUT;
        while !tasks.iter().all(|t| t.is_finished()) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

pub struct Lab {
    pub client_ns: String,
    pub backends: Vec<Arc<Backend>>,
    /// The client-side veth of each backend (for `tc`).
    pub links: Vec<String>,
    pub client_tls: Arc<rustls::ClientConfig>,
    runtime: BackgroundRuntime,
    namespaces: Namespaces,
}

impl Lab {
    /// A client namespace and `n` backends, names from `tag` and this
    /// process (≤ 6 characters of tag).
    pub fn new(tag: &str, n: usize) -> Lab {
        let tag = format!("{tag}{}", std::process::id() % 100_000);
        let client_ns = format!("{tag}c");
        let mut namespaces = Namespaces::new();
        namespaces.add(&client_ns);
        let mut links = Vec::new();
        let mut ips = Vec::new();
        for i in 1..=n {
            let ns = format!("{tag}b{i}");
            namespaces.add(&ns);
            let link = format!("{tag}v{i}");
            namespaces.veth(
                (&client_ns, &link, &format!("10.97.{i}.1/24")),
                (&ns, "eth0", &format!("10.97.{i}.2/24")),
            );
            links.push(link);
            ips.push((ns, SocketAddr::from(([10, 97, i as u8, 2], PORT))));
        }
        let ca = pki::generate_ca("balancer-test-ca").expect("a CA");
        let authority = pki::Authority::from_pem(&ca.cert_pem, &ca.key_pem).expect("the CA");
        let mut names = vec![SERVER_NAME.to_owned(), "127.0.0.1".to_owned()];
        names.extend(ips.iter().map(|(_, a)| a.ip().to_string()));
        let identity = authority
            .issue_server(
                &pki::ServerKey::generate().unwrap(),
                "kube-apiserver",
                &names,
            )
            .expect("a server certificate");
        let mut server = tls::server_anonymous(&identity).expect("server TLS");
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let mut client = tls::client(&ca.cert_pem, None).expect("client TLS");
        client.alpn_protocols = vec![b"http/1.1".to_vec()];

        let runtime = BackgroundRuntime::start();
        let mut backends = Vec::new();
        for (i, (ns, addr)) in ips.into_iter().enumerate() {
            let handle = runtime.handle.clone();
            // The backlog of kube-apiserver (Go: somaxconn), not std's 128,
            // which a flood through the balancer overflows.
            let listener = in_namespace(&ns, move || {
                let _entered = handle.enter();
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(addr)?;
                socket.listen(4096)
            })
            .unwrap_or_else(|e| panic!("listening on {addr} in {ns}: {e}"));
            let backend = Arc::new(Backend {
                name: format!("backend{}", i + 1),
                addr,
                served: AtomicU64::new(0),
                delay_us: AtomicU64::new(0),
                ready: AtomicBool::new(true),
                tasks: Mutex::new(Vec::new()),
            });
            let accept = {
                let _entered = runtime.handle.enter();
                tokio::spawn(accept_loop(backend.clone(), acceptor.clone(), listener))
            };
            backend.tasks.lock().unwrap().push(accept.abort_handle());
            backends.push(backend);
        }
        Lab {
            client_ns,
            backends,
            links,
            client_tls: Arc::new(client),
            runtime,
            namespaces,
        }
    }

    pub fn targets(&self) -> Vec<Target> {
        self.backends.iter().map(|b| Target::from(b.addr)).collect()
    }

    /// Which backend a response body names.
    pub fn index_of(&self, body: &str) -> Option<usize> {
        self.backends.iter().position(|b| b.name == body)
    }

    /// A balancer over all backends, listening on `127.0.0.1:0` in the
    /// client namespace, on a one-thread runtime of its own as in
    /// networkd.
    pub fn start_balancer(&self, settings: Settings) -> RunningBalancer {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let ns = self.client_ns.clone();
        let targets = self.targets();
        let thread = std::thread::spawn(move || {
            netns::enter(&ns).expect("entering the client namespace");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the balancer's runtime");
            runtime.block_on(async move {
                let balancer = Balancer::new(settings).expect("a balancer");
                balancer.set_endpoints("config", targets);
                let addr = balancer
                    .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
                    .await
                    .expect("listening");
                let _ = tx.send((balancer.clone(), addr, tokio::runtime::Handle::current()));
                let _ = stopped.await;
                balancer.shutdown();
            });
        });
        let (balancer, addr, handle) = rx.recv().expect("the balancer started");
        RunningBalancer {
            balancer,
            addr,
            handle,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The backends first; the namespaces go next, with their field.
        self.runtime.stop();
        let _ = &self.namespaces;
    }
}

/// A one-thread runtime on a thread of its own, for the backends.
struct BackgroundRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BackgroundRuntime {
    fn start() -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the backends' runtime");
            let _ = tx.send(runtime.handle().clone());
            let _ = runtime.block_on(stopped);
        });
        BackgroundRuntime {
            handle: rx.recv().expect("the backends' runtime started"),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A balancer running on its own thread; stopped on drop.
pub struct RunningBalancer {
    pub balancer: Balancer,
    pub addr: SocketAddr,
    pub handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningBalancer {
    /// Replaces the `config` endpoints (needs the balancer's runtime).
    pub fn set_endpoints(&self, source: &str, targets: Vec<Target>) {
        let _entered = self.handle.enter();
        self.balancer.set_endpoints(source, targets);
    }
}

impl Drop for RunningBalancer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `f` on a thread inside namespace `ns`.
pub fn in_namespace<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        netns::enter(&ns).expect("entering a namespace");
        f()
    })
    .join()
    .expect("the namespace thread panicked")
}

async fn accept_loop(
    backend: Arc<Backend>,
    acceptor: tokio_rustls::TlsAcceptor,
    listener: tokio::net::TcpListener,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let task = tokio::spawn(serve(backend.clone(), acceptor.clone(), tcp));
        let mut tasks = backend.tasks.lock().unwrap();
        tasks.retain(|t| !t.is_finished());
        tasks.push(task.abort_handle());
    }
}

async fn serve(
    backend: Arc<Backend>,
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
) {
    let Ok(tls) = acceptor.accept(tcp).await else {
        return;
    };
    let mut stream = BufReader::new(tls);
    let mut line = String::new();
    loop {
        let mut path = None;
        loop {
            line.clear();
            match stream.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if path.is_none() {
                path = Some(line.split_whitespace().nth(1).unwrap_or("/").to_owned());
            } else if line == "\r\n" {
                break;
            }
        }
        let delay = backend.delay_us.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_micros(delay)).await;
        }
        let (status, body) = if path.as_deref() == Some("/readyz") {
            if backend.ready.load(Ordering::SeqCst) {
                ("200 OK", "ok".to_owned())
            } else {
                ("500 Internal Server Error", "not ready".to_owned())
            }
        } else {
            backend.served.fetch_add(1, Ordering::SeqCst);
            ("200 OK", backend.name.clone())
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let out = stream.get_mut();
        if out.write_all(response.as_bytes()).await.is_err() || out.flush().await.is_err() {
            return;
        }
    }
}

/// A blocking HTTPS client connection (TCP, TLS with verification against
/// the test CA, keep-alive GETs). Call from a thread in the client
/// namespace.
pub struct Conn {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl Conn {
    /// Connects and completes the TLS handshake.
    pub fn open(addr: SocketAddr, tls: &Arc<rustls::ClientConfig>) -> std::io::Result<Conn> {
        let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(IO_TIMEOUT))?;
        tcp.set_write_timeout(Some(IO_TIMEOUT))?;
        let name = rustls::pki_types::ServerName::try_from(SERVER_NAME).unwrap();
        let conn =
            rustls::ClientConnection::new(tls.clone(), name).map_err(std::io::Error::other)?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(Conn { stream })
    }

    /// `GET path`; the body of a 200 answer.
    pub fn get(&mut self, path: &str) -> std::io::Result<String> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n");
        self.stream.write_all(request.as_bytes())?;
        self.stream.flush()?;
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 512];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .ok_or_else(|| std::io::Error::other("no Content-Length"))?;
        while buf.len() < head_end + length {
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        if !head.starts_with("HTTP/1.1 200") {
            return Err(std::io::Error::other(
                head.lines().next().unwrap_or("").to_owned(),
            ));
        }
        Ok(String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned())
    }
}

/// One request on a new connection: connect, handshake, `GET /who`.
/// Returns which backend answered (its name).
pub fn request(addr: SocketAddr, tls: &Arc<rustls::ClientConfig>) -> std::io::Result<String> {
    Conn::open(addr, tls)?.get("/who")
}
