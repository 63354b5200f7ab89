//! The hostile-builder suite: a build farm runs untrusted code, so the builders are the
//! attackers. Each test sends the daemon bad input on one of its ports, checks the
//! documented answer (a status, or a clean close), and then checks that the daemon is
//! still healthy and never panicked (it runs with `RUST_BACKTRACE=1`; any panic line in
//! its log fails the test). What each answer is, and why, is in `docs/security.md`.
//! `faults.rs` breaks what the daemon stands on (the disk) instead, and `upstream.rs`
//! has origins break off mid-response; `crash.rs` kills the daemon under load;
//! `escapes.rs` tries one session's token on another session and across restarts.

#[path = "../common/mod.rs"]
mod common;

mod control_input;
mod crash;
mod escapes;
mod faults;
mod proxy_input;
mod upstream;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Daemon, DaemonOpts};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How a daemon is started for hostile input: short head and idle timeouts so
/// slow-client tests finish quickly, and permissive sessions allowed (for the health
/// probe).
pub fn daemon_opts(dir: &Path) -> DaemonOpts {
    daemon_opts_with(dir, "")
}

/// [`daemon_opts`] with more settings for the `[proxy]` table of `fetchgate.toml`.
pub fn daemon_opts_with(dir: &Path, proxy_toml: &str) -> DaemonOpts {
    DaemonOpts::new(dir)
        .env("RUST_BACKTRACE", "1")
        .arg("--permissive-mode")
        .config_toml(&format!(
            "[proxy]\nheader-timeout = 2\nidle-timeout = 3\n{proxy_toml}"
        ))
}

/// A daemon started with [`daemon_opts`].
pub async fn daemon(dir: &Path) -> Daemon {
    daemon_opts(dir).start().await
}

/// A daemon for hostile input and a local origin; the directory must outlive both.
pub async fn setup() -> (tempfile::TempDir, Daemon, Origin) {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(dir.path()).await;
    (dir, d, Origin::start().await)
}

/// Fails if the daemon panicked, then checks it still answers on both ports: `/status`
/// on the control port, and a real download through the proxy.
pub async fn assert_healthy(d: &Daemon, origin: &Origin) {
    let log = d.log();
    assert!(
        !log.contains("panicked"),
        "the daemon panicked; log:\n{log}"
    );
    let status = d
        .anon(reqwest::Method::GET, "/status")
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 200);
    // Permissive: the probe's file is no artifact an inspector recognises.
    let (id, token) = d.create(json!({ "policy": "permissive" })).await;
    let proxy = reqwest::Proxy::http(format!("http://127.0.0.1:{}", d.opts.proxy_port))
        .unwrap()
        .basic_auth(&id, &token);
    let client = reqwest::Client::builder().proxy(proxy).build().unwrap();
    let r = client
        .get(format!("http://127.0.0.1:{}/healthy", origin.port))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");
}

/// A local origin answering every request with `200 ok`, counting the connections it
/// accepted (so a test can show that a refused request never reached it).
pub struct Origin {
    pub port: u16,
    pub connections: Arc<AtomicUsize>,
    /// Every request head received, in order.
    pub heads: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Origin {
    pub async fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let counter = Arc::clone(&connections);
        let seen_heads = Arc::clone(&heads);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let seen_heads = Arc::clone(&seen_heads);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut seen = Vec::new();
                    while let Ok(n) = conn.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head: Vec<u8> = seen.drain(..end + 4).collect();
                            seen_heads
                                .lock()
                                .unwrap()
                                .push(String::from_utf8_lossy(&head).into_owned());
                            let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                            if conn.write_all(reply).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Origin {
            port,
            connections,
            heads,
        }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// What came back on a raw connection.
#[derive(Debug)]
pub struct Answer {
    /// Everything the server sent before it closed (or the limit passed).
    pub text: String,
    /// Whether the server closed the connection (EOF or reset) within the limit.
    pub closed: bool,
}

impl Answer {
    /// The status code of the first response, if any.
    pub fn status(&self) -> Option<u16> {
        let rest = self.text.strip_prefix("HTTP/1.1 ")?;
        rest.get(..3)?.parse().ok()
    }
}

/// Sends `bytes` on a fresh connection to `port` and collects the answer until the
/// server closes or `limit` passes.
pub async fn exchange(port: u16, bytes: &[u8], limit: Duration) -> Answer {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // The server may close before reading everything (that is an answer too).
    let _ = conn.write_all(bytes).await;
    read_answer(&mut conn, limit).await
}

/// Reads from `conn` until the server closes or `limit` passes.
pub async fn read_answer(conn: &mut TcpStream, limit: Duration) -> Answer {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + limit;
    let closed = loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    };
    Answer {
        text: String::from_utf8_lossy(&got).into_owned(),
        closed,
    }
}

/// `Proxy-Authorization` for a session.
pub fn proxy_auth(id: &str, token: &str) -> String {
    use base64::Engine;
    let creds = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{token}"));
    format!("Proxy-Authorization: Basic {creds}\r\n")
}
