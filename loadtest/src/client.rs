//! The builders' HTTP client, on hyper's low-level `client::conn::http1` over streams the
//! harness opens itself, so it controls exactly what goes on the wire: absolute-form
//! requests to a proxy, CONNECT (with `Connection: close` like Launchpad's builder-side
//! forwarder when asked), TLS inside the tunnel, keep-alive or a connection per request.
//! It never reads proxy settings from the environment. Every failure is a [`FetchError`]
//! of a named kind, counted by the caller; nothing a server sends can panic it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// How a request leaves the builder.
#[derive(Debug, Clone)]
pub enum Route {
    /// Straight to the origin.
    Direct,
    /// Through a forward proxy, with a `Proxy-Authorization` value if it needs one.
    Proxy {
        addr: SocketAddr,
        authorization: Option<String>,
    },
}

impl Route {
    /// A route through `addr` authenticating as `user:password` (Basic).
    pub fn proxy_with_basic(addr: SocketAddr, user: &str, password: &str) -> Route {
        Route::Proxy {
            addr,
            authorization: Some(basic(user, password)),
        }
    }
}

/// `Basic base64(user:password)`.
pub fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// An origin listener: the host name requests use for it (in URLs, `Host`, CONNECT and
/// TLS server names) and the address that name stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    host: String,
    addr: SocketAddr,
}

impl Endpoint {
    pub fn new(host: &str, addr: SocketAddr) -> Endpoint {
        Endpoint {
            host: host.to_owned(),
            addr,
        }
    }
}

impl std::fmt::Display for Endpoint {
    /// `host:port`, with brackets around an IPv6 literal.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.addr.port())
        } else {
            write!(f, "{}:{}", self.host, self.addr.port())
        }
    }
}

/// How connections are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnMode {
    /// One connection per scheme per session, reused for every request.
    KeepAlive,
    /// A new connection per request; the request says `Connection: close`.
    Close,
    /// Like Launchpad's builder-side forwarder: a new connection per request and
    /// `Connection: close` on the CONNECT too.
    PerRequest,
}

/// The origin's scheme for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// Why a request did not complete; the kinds are the error table's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// TCP connect to the proxy or origin failed.
    Connect,
    /// The proxy refused or broke the CONNECT (non-200 or garbage).
    Tunnel,
    /// TLS handshake failed (for example an untrusted certificate).
    Tls,
    /// HTTP protocol error or the connection closed mid-exchange.
    Http,
    /// The request took longer than the per-request timeout.
    Timeout,
    /// A 4xx answer (from the origin's error mode or from the proxy).
    Status4xx,
    /// A 5xx answer (from the origin's error mode or from the proxy).
    Status5xx,
    /// Any other unexpected status.
    StatusOther,
    /// The body's size or digest differs from the artifact's.
    BodyMismatch,
    /// A control API call (create, revoke, report, end) failed.
    Control,
    /// The session report does not list exactly what was fetched.
    Report,
    /// A revoked token was still accepted after the revocation scenario gave up waiting.
    RevokedAccepted,
    /// The completions log (`--completions`) could not be written.
    Completions,
}

impl ErrorKind {
    /// The kind a non-200 status counts as.
    pub fn for_status(status: StatusCode) -> ErrorKind {
        if status.is_client_error() {
            ErrorKind::Status4xx
        } else if status.is_server_error() {
            ErrorKind::Status5xx
        } else {
            ErrorKind::StatusOther
        }
    }
}

/// A failed request.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind:?}: {detail}")]
pub struct FetchError {
    pub kind: ErrorKind,
    pub detail: String,
}

fn fail(kind: ErrorKind, detail: impl std::fmt::Display) -> FetchError {
    FetchError {
        kind,
        detail: detail.to_string(),
    }
}

/// What one completed exchange returned.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub body_len: u64,
    /// The body's sha256, when hashing was asked for.
    pub sha256: Option<[u8; 32]>,
    pub latency: Duration,
    /// The proxy refused the connection before reading the request (fetchgate's
    /// `Proxy-Status: ...; error=connection_limit_reached`), so no session records it.
    pub refused_unread: bool,
}

/// A connection ready for HTTP requests, and whether requests on it use absolute form.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    absolute_form: bool,
}

impl Conn {
    /// Sends one request; a malformed request or a broken exchange is an
    /// [`ErrorKind::Http`] error.
    async fn send(
        &mut self,
        request: hyper::http::request::Builder,
        body: Bytes,
    ) -> Result<hyper::Response<hyper::body::Incoming>, FetchError> {
        let request = request
            .body(Full::new(body))
            .map_err(|e| fail(ErrorKind::Http, e))?;
        self.sender
            .send_request(request)
            .await
            .map_err(|e| fail(ErrorKind::Http, e))
    }
}

/// Fetches from one origin (HTTP and HTTPS listeners) along one route, keeping
/// connections according to its [`ConnMode`].
pub struct Fetcher {
    route: Route,
    mode: ConnMode,
    tls: Arc<ClientConfig>,
    timeout: Duration,
    hash_bodies: bool,
    http: Option<Conn>,
    https: Option<Conn>,
}

impl Fetcher {
    pub fn new(
        route: Route,
        mode: ConnMode,
        tls: Arc<ClientConfig>,
        timeout: Duration,
        hash_bodies: bool,
    ) -> Fetcher {
        Fetcher {
            route,
            mode,
            tls,
            timeout,
            hash_bodies,
            http: None,
            https: None,
        }
    }

    /// GETs `path` from the origin at `origin`; the URL the report should show is
    /// [`url`] of the same arguments.
    pub async fn get(
        &mut self,
        scheme: Scheme,
        origin: &Endpoint,
        path: &str,
    ) -> Result<Response, FetchError> {
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, self.exchange(scheme, origin, path)).await;
        match result {
            Ok(Ok((status, body_len, sha256, refused_unread))) => Ok(Response {
                status,
                body_len,
                sha256,
                latency: started.elapsed(),
                refused_unread,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                // The connection is in an unknown state: never reuse it.
                self.http = None;
                self.https = None;
                Err(fail(
                    ErrorKind::Timeout,
                    format!("no answer within {:?}", self.timeout),
                ))
            }
        }
    }

    async fn exchange(
        &mut self,
        scheme: Scheme,
        origin: &Endpoint,
        path: &str,
    ) -> Result<(StatusCode, u64, Option<[u8; 32]>, bool), FetchError> {
        let keep = self.mode == ConnMode::KeepAlive;
        let slot = match scheme {
            Scheme::Http => &mut self.http,
            Scheme::Https => &mut self.https,
        };
        let mut reusable = slot.take().filter(|_| keep);
        if let Some(c) = &mut reusable
            && c.sender.ready().await.is_err()
        {
            // The server closed it while idle: open a new one.
            reusable = None;
        }
        let mut conn = match reusable {
            Some(c) => c,
            None => {
                connect(
                    &self.route,
                    scheme,
                    origin,
                    &self.tls,
                    self.mode == ConnMode::PerRequest,
                )
                .await?
            }
        };
        let uri = if conn.absolute_form {
            url(scheme, origin, path)
        } else {
            path.to_owned()
        };
        let mut request = Request::builder()
            .method(Method::GET)
            .uri(uri)
            .header(hyper::header::HOST, origin.to_string())
            .header(hyper::header::USER_AGENT, "fetchgate-loadtest");
        if let (
            true,
            Route::Proxy {
                authorization: Some(auth),
                ..
            },
        ) = (conn.absolute_form, &self.route)
        {
            request = request.header(hyper::header::PROXY_AUTHORIZATION, auth);
        }
        if !keep {
            request = request.header(hyper::header::CONNECTION, "close");
        }
        let response = conn.send(request, Bytes::new()).await?;
        let status = response.status();
        let refused_unread = response
            .headers()
            .get("proxy-status")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("error=connection_limit_reached"));
        let mut body = response.into_body();
        let mut len = 0u64;
        let mut hasher = self.hash_bodies.then(Sha256::new);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| fail(ErrorKind::Http, e))?;
            if let Some(data) = frame.data_ref() {
                len += data.len() as u64;
                if let Some(h) = &mut hasher {
                    h.update(data);
                }
            }
        }
        if keep {
            match scheme {
                Scheme::Http => self.http = Some(conn),
                Scheme::Https => self.https = Some(conn),
            }
        }
        Ok((
            status,
            len,
            hasher.map(|h| h.finalize().into()),
            refused_unread,
        ))
    }
}

/// The normalised URL of a request, as fetchgate's report shows it (explicit port).
pub fn url(scheme: Scheme, origin: &Endpoint, path: &str) -> String {
    let scheme = match scheme {
        Scheme::Http => "http",
        Scheme::Https => "https",
    };
    format!("{scheme}://{origin}{path}")
}

/// Opens a connection for `scheme` requests to `origin` along `route`.
async fn connect(
    route: &Route,
    scheme: Scheme,
    origin: &Endpoint,
    tls: &Arc<ClientConfig>,
    close_on_connect: bool,
) -> Result<Conn, FetchError> {
    let first_hop = match route {
        Route::Direct => origin.addr,
        Route::Proxy { addr, .. } => *addr,
    };
    let tcp = TcpStream::connect(first_hop)
        .await
        .map_err(|e| fail(ErrorKind::Connect, format!("{first_hop}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    match (scheme, route) {
        (Scheme::Http, Route::Direct) => handshake(tcp, false).await,
        (Scheme::Http, Route::Proxy { .. }) => handshake(tcp, true).await,
        (Scheme::Https, Route::Direct) => {
            handshake(tls_connect(tcp, origin, tls).await?, false).await
        }
        (Scheme::Https, Route::Proxy { authorization, .. }) => {
            let mut tcp = tcp;
            tunnel(&mut tcp, origin, authorization.as_deref(), close_on_connect).await?;
            handshake(tls_connect(tcp, origin, tls).await?, false).await
        }
    }
}

async fn tls_connect(
    tcp: TcpStream,
    origin: &Endpoint,
    tls: &Arc<ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, FetchError> {
    let name = ServerName::try_from(origin.host.clone())
        .map_err(|e| fail(ErrorKind::Tls, format!("{:?}: {e}", origin.host)))?;
    TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| fail(ErrorKind::Tls, e))
}

async fn handshake<S>(stream: S, absolute_form: bool) -> Result<Conn, FetchError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| fail(ErrorKind::Http, e))?;
    // Errors surface on the request that hits them; the task only drives the connection.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(Conn {
        sender,
        absolute_form,
    })
}

/// The longest CONNECT response head accepted.
const MAX_TUNNEL_HEAD: usize = 16 * 1024;

/// Sends a CONNECT for `origin` on `stream` and reads the answer up to the end of its
/// head; anything but `200` is a [`ErrorKind::Tunnel`] error.
pub async fn tunnel<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    origin: &Endpoint,
    authorization: Option<&str>,
    close: bool,
) -> Result<(), FetchError> {
    let mut head = format!("CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n");
    if let Some(auth) = authorization {
        head.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| fail(ErrorKind::Tunnel, e))?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    let head_len = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() >= MAX_TUNNEL_HEAD {
            return Err(fail(ErrorKind::Tunnel, "CONNECT answer head too long"));
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| fail(ErrorKind::Tunnel, e))?;
        if n == 0 {
            return Err(fail(ErrorKind::Tunnel, "proxy closed during CONNECT"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let status_line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    let status_line = String::from_utf8_lossy(status_line);
    let code = status_line.split_whitespace().nth(1).unwrap_or_default();
    if code != "200" {
        return Err(fail(
            ErrorKind::Tunnel,
            format!("CONNECT answered {:?}", status_line.trim_end()),
        ));
    }
    // Until the client speaks TLS the proxy has nothing to say; bytes here would be lost.
    if buf.len() > head_len {
        return Err(fail(
            ErrorKind::Tunnel,
            "the proxy sent data after its CONNECT answer, before the TLS handshake",
        ));
    }
    Ok(())
}

/// Sends one request on a connection opened for it and returns the status and body:
/// the control API client's only transport.
pub async fn one_shot(
    addr: SocketAddr,
    method: Method,
    path: &str,
    authorization: Option<&str>,
    body: Option<Vec<u8>>,
) -> Result<(StatusCode, Bytes), FetchError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| fail(ErrorKind::Connect, format!("{addr}: {e}")))?;
    let mut conn = handshake(tcp, false).await?;
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::CONNECTION, "close");
    if let Some(auth) = authorization {
        request = request.header(hyper::header::AUTHORIZATION, auth);
    }
    if body.is_some() {
        request = request.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let response = conn
        .send(request, Bytes::from(body.unwrap_or_default()))
        .await?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| fail(ErrorKind::Http, e))?
        .to_bytes();
    Ok((status, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Reads a request head from `stream` and answers `answer`; returns the head.
    async fn answer_once<S: AsyncRead + AsyncWrite + Unpin>(
        stream: &mut S,
        answer: &[u8],
    ) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).await.unwrap() == 1 {
            head.push(byte[0]);
        }
        stream.write_all(answer).await.unwrap();
        String::from_utf8(head).unwrap()
    }

    #[tokio::test]
    async fn connect_carries_credentials_and_close_and_a_refusal_is_a_tunnel_error() {
        let (mut client, mut proxy) = tokio::io::duplex(4096);
        let seen = tokio::spawn(async move {
            answer_once(
                &mut proxy,
                b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n",
            )
            .await
        });
        let origin = Endpoint::new("localhost", "127.0.0.1:8443".parse().unwrap());
        let err = tunnel(&mut client, &origin, Some("Basic YTpi"), true)
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Tunnel);
        assert!(err.detail.contains("407"), "{}", err.detail);
        let head = seen.await.unwrap();
        assert!(
            head.starts_with("CONNECT localhost:8443 HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.contains("Proxy-Authorization: Basic YTpi\r\n"),
            "{head}"
        );
        assert!(head.contains("Connection: close\r\n"), "{head}");
    }

    #[tokio::test]
    async fn an_accepted_connect_is_ok_and_early_tunnel_data_is_refused() {
        let origin = Endpoint::new("127.0.0.1", "127.0.0.1:8443".parse().unwrap());
        for (answer, ok) in [
            (&b"HTTP/1.1 200 Connection established\r\n\r\n"[..], true),
            (&b"HTTP/1.1 200 OK\r\n\r\nsurprise"[..], false),
        ] {
            let (mut client, mut proxy) = tokio::io::duplex(4096);
            let seen = tokio::spawn(async move { answer_once(&mut proxy, answer).await });
            let result = tunnel(&mut client, &origin, None, false).await;
            assert_eq!(result.is_ok(), ok, "{result:?}");
            let head = seen.await.unwrap();
            assert!(!head.contains("Proxy-Authorization") && !head.contains("Connection:"));
        }
    }

    #[tokio::test]
    async fn garbage_from_a_proxy_is_an_http_error_and_absolute_form_is_sent() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            answer_once(&mut s, b"NOT HTTP AT ALL\r\n\r\n").await
        });
        let route = Route::proxy_with_basic(addr, "id", "token");
        let tls = crate::tls::client_config(&[]).unwrap();
        let mut f = Fetcher::new(
            route,
            ConnMode::KeepAlive,
            tls,
            Duration::from_secs(5),
            false,
        );
        let origin = Endpoint::new("127.0.0.1", "127.0.0.1:8080".parse().unwrap());
        let err = f
            .get(Scheme::Http, &origin, "/artifact/1/0")
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Http);
        let head = seen.await.unwrap();
        assert!(
            head.starts_with("GET http://127.0.0.1:8080/artifact/1/0 HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(head.to_ascii_lowercase().contains(
            &format!("proxy-authorization: {}", basic("id", "token")).to_ascii_lowercase()
        ));
    }
}
