//! Bad input on the proxy port.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{assert_healthy, exchange, proxy_auth, read_answer, setup};

const QUICK: Duration = Duration::from_secs(5);

#[tokio::test]
async fn ambiguous_body_framing_is_refused_or_made_unambiguous() {
    let (_dir, d, origin) = setup().await;
    let (id, token) = d.create(json!({})).await;
    let auth = proxy_auth(&id, &token);
    let url = format!("http://127.0.0.1:{}/x", origin.port);
    let host = format!("Host: 127.0.0.1:{}\r\n", origin.port);
    let cases = [
        (
            "two different Content-Lengths",
            format!(
                "POST {url} HTTP/1.1\r\n{host}{auth}Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcde"
            ),
        ),
        (
            "an obs-folded header",
            format!("GET {url} HTTP/1.1\r\n{host}{auth}X-Folded: a\r\n  b\r\n\r\n"),
        ),
        (
            "a Transfer-Encoding other than chunked",
            format!("POST {url} HTTP/1.1\r\n{host}{auth}Transfer-Encoding: gzip, identity\r\n\r\n"),
        ),
    ];
    for (what, request) in cases {
        let answer = exchange(d.opts.proxy_port, request.as_bytes(), QUICK).await;
        assert_eq!(answer.status(), Some(400), "{what}: {answer:?}");
        assert!(answer.closed, "{what}: the connection must not be reused");
    }
    assert_eq!(
        origin.connections(),
        0,
        "a smuggling attempt reached the origin"
    );
    assert_healthy(&d, &origin).await;
}

#[tokio::test]
async fn oversized_request_lines_are_414_and_oversized_heads_431() {
    let (_dir, d, origin) = setup().await;
    let (id, token) = d.create(json!({})).await;
    let auth = proxy_auth(&id, &token);
    let long_path = "a".repeat(16 * 1024);
    let request = format!(
        "GET http://127.0.0.1:{}/{long_path} HTTP/1.1\r\n{auth}\r\n",
        origin.port
    );
    let answer = exchange(d.opts.proxy_port, request.as_bytes(), QUICK).await;
    assert_eq!(answer.status(), Some(414), "{answer:?}");
    let filler = format!("X-Filler: {}\r\n", "b".repeat(1000)).repeat(100);
    let request = format!(
        "GET http://127.0.0.1:{}/ HTTP/1.1\r\n{auth}{filler}\r\n",
        origin.port
    );
    let answer = exchange(d.opts.proxy_port, request.as_bytes(), QUICK).await;
    assert_eq!(answer.status(), Some(431), "{answer:?}");
    // The same inside an intercepted tunnel is refused by the same rule; a CONNECT
    // head that is too large never becomes a tunnel.
    let request = format!("CONNECT 127.0.0.1:443 HTTP/1.1\r\n{auth}{filler}\r\n");
    let answer = exchange(d.opts.proxy_port, request.as_bytes(), QUICK).await;
    assert_eq!(answer.status(), Some(431), "{answer:?}");
    assert_eq!(origin.connections(), 0);
    assert_healthy(&d, &origin).await;
}

#[tokio::test]
async fn invalid_connect_targets_are_400() {
    let (_dir, d, origin) = setup().await;
    let (id, token) = d.create(json!({})).await;
    let auth = proxy_auth(&id, &token);
    for target in [
        "127.0.0.1",
        "127.0.0.1:0",
        "user@127.0.0.1:443",
        "user:pw@127.0.0.1:443",
        "::1:443",
        "[::1]",
        "127.0.0.1:99999",
        "",
        "http://127.0.0.1:443",
    ] {
        let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n");
        let answer = exchange(d.opts.proxy_port, request.as_bytes(), QUICK).await;
        assert_eq!(answer.status(), Some(400), "CONNECT {target:?}: {answer:?}");
        assert!(answer.closed, "CONNECT {target:?}");
    }
    assert_healthy(&d, &origin).await;
}

#[tokio::test]
async fn not_http_at_all_gets_400_or_a_clean_close() {
    let (_dir, d, origin) = setup().await;
    let (id, token) = d.create(json!({})).await;
    let auth = proxy_auth(&id, &token);
    // The start of a TLS 1.2 ClientHello, as a client that forgot the CONNECT sends it.
    let client_hello: &[u8] = &[
        0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03, 0x00, 0x01, 0x02, 0x03,
        0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    ];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("HTTP/0.9", b"GET /\r\n\r\n".to_vec()),
        ("garbage", (0..=255u8).cycle().take(4096).collect()),
        ("a TLS ClientHello", client_hello.to_vec()),
        ("NUL bytes", vec![0u8; 100]),
        (
            "a request line without a version",
            format!("GET http://127.0.0.1:{}/\r\n{auth}\r\n", origin.port).into_bytes(),
        ),
        (
            "another scheme",
            format!(
                "GET ftp://127.0.0.1:{}/f HTTP/1.1\r\n{auth}\r\n",
                origin.port
            )
            .into_bytes(),
        ),
        (
            "origin-form on a proxy",
            format!(
                "GET /f HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{auth}\r\n",
                origin.port
            )
            .into_bytes(),
        ),
    ];
    for (what, bytes) in cases {
        let answer = exchange(d.opts.proxy_port, &bytes, QUICK).await;
        assert!(answer.closed, "{what}: left open: {answer:?}");
        assert!(
            answer.text.is_empty() || answer.status() == Some(400),
            "{what}: {answer:?}"
        );
    }
    assert_eq!(origin.connections(), 0);
    assert_healthy(&d, &origin).await;
}

#[tokio::test]
async fn a_connect_that_never_sends_a_client_hello_is_closed_at_the_head_timeout() {
    let (_dir, d, origin) = setup().await;
    let (id, token) = d.create(json!({})).await;
    let auth = proxy_auth(&id, &token);
    let start = Instant::now();
    let mut conn = TcpStream::connect(("127.0.0.1", d.opts.proxy_port))
        .await
        .unwrap();
    let connect = format!("CONNECT 127.0.0.1:{} HTTP/1.1\r\n{auth}\r\n", origin.port);
    conn.write_all(connect.as_bytes()).await.unwrap();
    let answer = read_answer(&mut conn, Duration::from_secs(8)).await;
    assert!(
        answer.text.starts_with("HTTP/1.1 200"),
        "the CONNECT itself is fine: {answer:?}"
    );
    assert!(answer.closed, "a tunnel without a ClientHello stayed open");
    // The head timeout is 2 s in this setup.
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(origin.connections(), 0);
    assert_healthy(&d, &origin).await;
}

/// Sends `head` one byte every 250 ms, never finishing it, and returns how long after
/// the first byte the proxy closed the connection (`None`: still open after 8 s).
async fn trickle(conn: &mut TcpStream, head: &[u8]) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    for byte in head.iter().cycle() {
        if start.elapsed() > Duration::from_secs(8) {
            return None;
        }
        if conn.write_all(&[*byte]).await.is_err() {
            return Some(start.elapsed());
        }
        match tokio::time::timeout(Duration::from_millis(250), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    None
}

#[tokio::test]
async fn a_request_head_trickled_slowly_is_closed_at_the_head_timeout() {
    let (_dir, d, origin) = setup().await;
    let (id, token) = d.create(json!({ "policy": "permissive" })).await;
    let auth = proxy_auth(&id, &token);
    let url = format!("http://127.0.0.1:{}/slow", origin.port);
    // Every byte arrives well within the per-read timeout; the head as a whole does not.
    let slow = format!("GET {url} HTTP/1.1\r\n{auth}X-Padding: {}", "a".repeat(200));

    // The first request on a connection.
    let mut conn = TcpStream::connect(("127.0.0.1", d.opts.proxy_port))
        .await
        .unwrap();
    let closed = trickle(&mut conn, slow.as_bytes()).await;
    // The head timeout is 2 s in this setup.
    assert!(
        closed.is_some_and(|t| t < Duration::from_secs(4)),
        "a trickled first head was not cut off: {closed:?}"
    );

    // A later request on a kept-alive connection gets the same deadline.
    let mut conn = TcpStream::connect(("127.0.0.1", d.opts.proxy_port))
        .await
        .unwrap();
    let quick = format!(
        "GET {url} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{auth}\r\n",
        origin.port
    );
    conn.write_all(quick.as_bytes()).await.unwrap();
    read_ok(&mut conn).await;
    let closed = trickle(&mut conn, slow.as_bytes()).await;
    assert!(
        closed.is_some_and(|t| t < Duration::from_secs(4)),
        "a trickled second head was not cut off: {closed:?}"
    );
    assert_eq!(
        origin.connections(),
        1,
        "only the complete request went upstream"
    );
    assert_healthy(&d, &origin).await;
}

/// Reads one complete `200 ok` answer from the local origin, the connection left open.
async fn read_ok(conn: &mut TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).ends_with("\r\n\r\nok") {
        let n = tokio::time::timeout(QUICK, conn.read(&mut buf))
            .await
            .expect("no answer to the request")
            .unwrap();
        assert!(n > 0, "closed after the request: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"), "{got:?}");
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_at_the_idle_timeout() {
    let (_dir, d, origin) = setup().await;
    let (id, token) = d.create(json!({ "policy": "permissive" })).await;
    let auth = proxy_auth(&id, &token);
    let mut conn = TcpStream::connect(("127.0.0.1", d.opts.proxy_port))
        .await
        .unwrap();
    let request = format!(
        "GET http://127.0.0.1:{0}/idle HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\n{auth}\r\n",
        origin.port
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    read_ok(&mut conn).await;
    // Still usable within the idle timeout (3 s in this setup)...
    tokio::time::sleep(Duration::from_millis(1500)).await;
    conn.write_all(request.as_bytes()).await.unwrap();
    read_ok(&mut conn).await;
    // ... and closed once it has idled past it.
    let idle = Instant::now();
    let answer = read_answer(&mut conn, Duration::from_secs(8)).await;
    assert!(answer.closed && answer.text.is_empty(), "{answer:?}");
    let waited = idle.elapsed();
    assert!(
        waited > Duration::from_millis(2500) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    assert_healthy(&d, &origin).await;
}
