//! The proxy port (default 9988).
//!
//! The forward-proxy pipeline (CONNECT, TLS interception, auth, streaming hashing) is
//! not built yet. Until it is, the daemon still owns the port — so a taken port stops
//! start-up with status 1 exactly as the reference does — and answers every request
//! with `501 Not Implemented` and a JSON body saying so, rather than silently
//! forwarding unrecorded traffic.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::idle::Activity;

const BODY: &str = "{\"error\": \"this fetchgate build does not forward requests yet\"}";
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head read before answering.
const MAX_HEAD: usize = 16 * 1024;

/// Accepts proxy connections until `stop` fires.
pub async fn serve(
    listener: TcpListener,
    activity: Arc<Activity>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = stop.changed() => return,
        };
        match conn {
            Ok((stream, _)) => {
                activity.touch();
                tokio::spawn(answer(stream));
            }
            Err(e) => {
                tracing::warn!(error = %e, "proxy accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn answer(mut stream: TcpStream) {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    let read = tokio::time::timeout(HEAD_TIMEOUT, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    })
    .await;
    if read != Ok(true) {
        return;
    }
    let response = format!(
        "HTTP/1.1 501 Not Implemented\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
