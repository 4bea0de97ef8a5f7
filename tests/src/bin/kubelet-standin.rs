//! A STAND-IN for kubelet, for tests only: the real kubelet cannot be
//! downloaded where Slate is built. It prints the flags it was started
//! with (so tests see what machined passed), checks that the files its
//! `--config` and `--bootstrap-kubeconfig` name exist, lists the static
//! pod manifests in the `staticPodPath` its config names, and answers
//! `GET /healthz` on 127.0.0.1:10248 with 200, as kubelet does. It runs no
//! pods and talks to no API server. Never shipped in an image by default.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("kubelet-standin started with: {}", args.join(" "));
    for flag in ["--config=", "--bootstrap-kubeconfig="] {
        match args.iter().find_map(|a| a.strip_prefix(flag)) {
            Some(path) if std::path::Path::new(path).is_file() => {
                println!("{flag}{path}: present");
            }
            Some(path) => {
                eprintln!("{flag}{path}: missing");
                return std::process::ExitCode::FAILURE;
            }
            None => {
                eprintln!("no {flag}PATH");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    // What a real kubelet would start from its manifest directory.
    let config = args
        .iter()
        .find_map(|a| a.strip_prefix("--config="))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    if let Some(dir) = config
        .lines()
        .find_map(|l| l.strip_prefix("staticPodPath: "))
    {
        let mut files: Vec<String> = std::fs::read_dir(dir.trim())
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        files.sort();
        println!("staticPodPath {}: [{}]", dir.trim(), files.join(" "));
        // What a real kubelet would mount: every hostPath must exist
        // (the control plane's are typed `Directory`).
        for file in &files {
            let path = std::path::Path::new(dir.trim()).join(file);
            let pod: Result<k8s_openapi::api::core::v1::Pod, String> =
                std::fs::read_to_string(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|t| serde_saphyr::from_str(&t).map_err(|e| e.to_string()));
            match pod {
                Ok(pod) => {
                    let missing: Vec<String> = pod
                        .spec
                        .and_then(|s| s.volumes)
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|v| v.host_path.map(|h| h.path))
                        .filter(|p| !std::path::Path::new(p).exists())
                        .collect();
                    if missing.is_empty() {
                        println!("{file}: a Pod whose host paths all exist");
                    } else {
                        println!("{file}: missing host paths {}", missing.join(" "));
                    }
                }
                Err(e) => println!("{file}: not a Pod: {e}"),
            }
        }
    }
    let listener = match TcpListener::bind("127.0.0.1:10248") {
        Ok(l) => l,
        Err(e) => {
            eprintln!("binding 127.0.0.1:10248: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("serving /healthz on 127.0.0.1:10248");
    for stream in listener.incoming().flatten() {
        let mut stream = stream;
        let mut buf = [0u8; 1024];
        let n = stream.read(&mut buf).unwrap_or(0);
        let request = String::from_utf8_lossy(&buf[..n]);
        let answer: &[u8] = if request.starts_with("GET /healthz ") {
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
        } else {
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        };
        let _ = stream.write_all(answer);
    }
    std::process::ExitCode::SUCCESS
}
