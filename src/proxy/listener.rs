//! Connection handling on the proxy port, in front of Pingora's HTTP/1 machinery.
//!
//! Each accepted connection is classified by its first bytes. A plain request goes
//! straight to the pipeline (`HttpProxy::process_new_http`), which authenticates every
//! request. A `CONNECT` is read here: authenticated, checked against the ACL when its
//! host is an IP literal, answered `200 Connection established` (whatever its
//! `Connection` header says), TLS-accepted with a leaf certificate for its host, and
//! the decrypted stream is handed to the same pipeline with the tunnel's session and
//! destination attached to the connection. Either way the stream the pipeline writes
//! to is gated on the audit log (see `downstream`).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use fetchgate_storage::{AuditRecord, Denied, DeniedStage, SessionId, Timestamp};
use pingora::apps::{HttpPersistentSettings, HttpServerApp};
use pingora::listeners::tls::Acceptor;
use pingora::protocols::Stream;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest};
use pingora::proxy::HttpProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::acl::Acl;
use super::auth;
use super::downstream::{DownstreamStream, DurabilityGate, HeadClock};
use super::mitm::CertCache;
use super::pipeline::{Connection, Pipeline, Tunnel};
use super::target::{HostPort, Target};
use crate::session::Sessions;
use crate::telemetry::{OpenConnection, SECURITY, metric};

/// How long a client may take, and how much it may send, before it is a request.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time allowed for a request head, counted from its first byte (slowloris defence).
    pub head_timeout: Duration,
    /// Largest CONNECT request head.
    pub max_head_bytes: usize,
    /// Time a kept-alive connection or tunnel may sit idle between requests.
    pub idle_timeout: Duration,
}

/// Everything a connection needs.
pub struct ProxyListener {
    pub proxy: Arc<HttpProxy<Pipeline>>,
    pub certs: Arc<CertCache>,
    pub sessions: Arc<Sessions>,
    pub acl: Arc<Acl>,
    pub limits: ConnectionLimits,
    /// One permit per open connection.
    pub connections: Arc<tokio::sync::Semaphore>,
}

impl ProxyListener {
    /// Accepts connections until `stop` fires.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, stop: watch::Receiver<bool>) {
        let mut stop_accepting = stop.clone();
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stop_accepting.changed() => return,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    let Ok(permit) = Arc::clone(&self.connections).try_acquire_owned() else {
                        metrics::counter!(metric::PROXY_DENIED, "stage" => "limit").increment(1);
                        tracing::warn!(%peer, "connection limit reached; answering 503");
                        tokio::spawn(async move {
                            let mut stream = L4Stream::from(tcp);
                            // Refused before any request is read, so not recorded in
                            // any session: Proxy-Status (RFC 9209) says so to clients.
                            reply(
                                &mut stream,
                                503,
                                "too many connections to the proxy; retry later",
                                &[("Proxy-Status", "fetchgate; error=connection_limit_reached")],
                            )
                            .await;
                        });
                        continue;
                    };
                    let this = Arc::clone(&self);
                    let stop = stop.clone();
                    let open = OpenConnection::start();
                    tokio::spawn(async move {
                        this.handle(tcp, peer, stop).await;
                        drop((permit, open));
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Serves one connection. Its opening (request head, CONNECT, TLS handshake) runs in
    /// a future of its own, freed before the requests are served, so a kept-alive
    /// connection holds only what serving needs.
    async fn handle(&self, tcp: TcpStream, peer: SocketAddr, stop: watch::Receiver<bool>) {
        if let Some((stream, tunnel)) = Box::pin(self.open(tcp, peer)).await {
            self.run_http(stream, tunnel, peer, &stop).await;
        }
    }

    /// Reads the first request head; a CONNECT is answered and TLS-accepted. Returns the
    /// stream HTTP requests arrive on, or `None` if the connection was already dealt with.
    async fn open(&self, tcp: TcpStream, peer: SocketAddr) -> Option<(Stream, Option<Tunnel>)> {
        let _ = tcp.set_nodelay(true);
        let fd = tcp.as_raw_fd();
        let mut stream = L4Stream::from(tcp);
        stream.set_socket_digest(SocketDigest::from_raw_fd(fd));
        let head = match tokio::time::timeout(
            self.limits.head_timeout,
            read_head(&mut stream, self.limits.max_head_bytes),
        )
        .await
        {
            Ok(Ok(head)) => head,
            Ok(Err(HeadError::TooLarge)) => {
                reply(&mut stream, 431, "request header too large", &[]).await;
                return None;
            }
            Ok(Err(HeadError::Closed)) => return None,
            Err(_) => {
                tracing::debug!(%peer, "client sent no request head in time");
                return None;
            }
        };
        match head {
            Head::Plain(bytes) => {
                stream.rewind(&bytes);
                Some((Box::new(stream), None))
            }
            Head::Connect { bytes, head_len } => {
                let tunnel = self
                    .open_tunnel(&mut stream, &bytes[..head_len], peer)
                    .await?;
                if bytes.len() > head_len {
                    stream.rewind(&bytes[head_len..]);
                }
                let config = match self.certs.server_config(&tunnel.dest.host) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot build the interception TLS config");
                        return None;
                    }
                };
                // Bounded like a request head: a CONNECT followed by silence must not hold
                // a connection for ever.
                let acceptor = Acceptor::from_server_config(config);
                let handshake =
                    tokio::time::timeout(self.limits.head_timeout, acceptor.tls_handshake(stream));
                match handshake.await {
                    Ok(Ok(tls)) => Some((Box::new(tls), Some(tunnel))),
                    Err(_) => {
                        tracing::info!(%peer, dest = %tunnel.dest, "no TLS handshake from the builder in time");
                        None
                    }
                    Ok(Err(e)) => {
                        tracing::info!(%peer, dest = %tunnel.dest, error = %e, "TLS handshake with the builder failed");
                        None
                    }
                }
            }
        }
    }

    /// Authenticates and answers a CONNECT; `None` if it was refused (already answered).
    async fn open_tunnel(
        &self,
        stream: &mut L4Stream,
        head: &[u8],
        peer: SocketAddr,
    ) -> Option<Tunnel> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if req.parse(head).is_err() {
            reply(stream, 400, "malformed CONNECT request", &[]).await;
            return None;
        }
        let raw_target = req.path.unwrap_or_default().to_owned();
        let dest = match Target::parse_connect(raw_target.as_bytes()) {
            Ok(d) => d,
            Err(e) => {
                reply(stream, 400, &e.to_string(), &[]).await;
                return None;
            }
        };
        let header = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("proxy-authorization"))
            .map(|h| h.value);
        let session = match auth::authenticate(&self.sessions, header, &peer.to_string()).await {
            Ok(h) => h,
            Err(r) => {
                self.record_denied(r.session, peer, &dest, DeniedStage::Auth, &r.reason)
                    .await;
                metrics::counter!(metric::PROXY_DENIED, "stage" => "auth").increment(1);
                let challenge: &[(&str, &str)] = if r.status == 407 {
                    &[("Proxy-Authenticate", "Basic realm=\"fetchgate\"")]
                } else {
                    &[]
                };
                reply(stream, r.status, &r.reason, challenge).await;
                return None;
            }
        };
        if let Err(d) = self.acl.check_destination(&dest) {
            let reason = d.to_string();
            tracing::warn!(target: SECURITY, event = "acl-denial", session = %session.id, dest = %dest, %reason, "CONNECT denied");
            self.record_denied(Some(session.id), peer, &dest, DeniedStage::Acl, &reason)
                .await;
            metrics::counter!(metric::PROXY_DENIED, "stage" => "acl").increment(1);
            reply(stream, 403, &reason, &[]).await;
            return None;
        }
        if stream
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_err()
            || stream.flush().await.is_err()
        {
            return None;
        }
        Some(Tunnel {
            session: session.id,
            dest,
        })
    }

    async fn record_denied(
        &self,
        id: Option<SessionId>,
        peer: SocketAddr,
        dest: &HostPort,
        stage: DeniedStage,
        reason: &str,
    ) {
        let Some(id) = id else { return };
        let record = AuditRecord::Denied(Denied {
            time: Timestamp::now(),
            method: "CONNECT".into(),
            url: format!("https://{dest}"),
            client_address: peer.to_string(),
            reason: reason.to_owned(),
            stage,
        });
        if let Err(e) = self.sessions.log().append(id, record).await {
            tracing::error!(session = %id, error = %e, "cannot record a refused CONNECT");
        }
    }

    /// Serves HTTP/1 requests on `stream` until the client or the pipeline closes it.
    ///
    /// Each request is handed to Pingora only once its first bytes have arrived: an idle
    /// kept-alive connection waits here, in a small future, rather than inside Pingora's
    /// request handling. From then on its whole head must arrive within the head
    /// timeout, however slowly it trickles in.
    async fn run_http(
        &self,
        stream: Stream,
        tunnel: Option<Tunnel>,
        peer: SocketAddr,
        stop: &watch::Receiver<bool>,
    ) {
        let gate = DurabilityGate::default();
        let clock = HeadClock::default();
        let mut stream = Box::new(DownstreamStream::new(stream, gate.clone()));
        let mut first = Some(Connection {
            tunnel,
            gate,
            head: clock.clone(),
            client: peer.to_string().into(),
        });
        let mut settings: Option<HttpPersistentSettings> = None;
        let mut idle = self.limits.head_timeout;
        loop {
            let mut stop_waiting = stop.clone();
            // `biased`: polled in order, sparing a random draw per request; neither
            // branch can starve the other (each completes once).
            let arrived = tokio::select! {
                biased;
                r = tokio::time::timeout(idle, stream.wait_for_data()) => matches!(r, Ok(Ok(true))),
                _ = stop_waiting.changed() => false,
            };
            if !arrived || *stop.borrow() {
                return;
            }
            let mut session = ServerSession::new_http1(stream);
            // The first request gets the connection's context; later ones inherit it
            // from the previous request (`persist_connection_context`).
            match (settings.take(), first.take()) {
                (Some(settings), _) => settings.apply_to_session(&mut session),
                (None, Some(context)) => {
                    session.set_connection_user_context(Some(Box::new(context)))
                }
                (None, None) => return,
            }
            session.set_keepalive(Some(self.limits.idle_timeout.as_secs()));
            session.set_read_timeout(Some(self.limits.head_timeout));
            clock.start();
            let served = tokio::select! {
                biased;
                served = self.proxy.process_new_http(session, stop) => served,
                () = clock.expired(self.limits.head_timeout) => {
                    tracing::info!(
                        timeout = ?self.limits.head_timeout,
                        "request head not complete within the header timeout; closing the connection"
                    );
                    return;
                }
            };
            let Some(reused) = served else {
                return;
            };
            let (next, next_settings) = reused.consume();
            let Ok(next) = next.into_any().downcast::<DownstreamStream>() else {
                tracing::error!("a reused downstream stream is not the listener's; closing it");
                return;
            };
            stream = next;
            settings = next_settings;
            idle = self.limits.idle_timeout;
        }
    }
}

enum Head {
    /// Not a CONNECT: the bytes read so far, to be replayed.
    Plain(Vec<u8>),
    /// A CONNECT head of `head_len` bytes, possibly followed by early TLS bytes.
    Connect { bytes: Vec<u8>, head_len: usize },
}

enum HeadError {
    Closed,
    TooLarge,
}

const CONNECT: &[u8] = b"CONNECT ";

/// Reads just enough to tell a CONNECT from anything else, and a CONNECT's whole head.
async fn read_head(stream: &mut L4Stream, max: usize) -> Result<Head, HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|_| HeadError::Closed)?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        let prefix = buf.len().min(CONNECT.len());
        if !buf[..prefix].eq_ignore_ascii_case(&CONNECT[..prefix]) {
            return Ok(Head::Plain(buf));
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Head::Connect {
                bytes: buf,
                head_len: end + 4,
            });
        }
        if buf.len() > max {
            return Err(HeadError::TooLarge);
        }
    }
}

/// Answers on a raw connection with a JSON error and closes it.
async fn reply(stream: &mut L4Stream, status: u16, reason: &str, extra: &[(&str, &str)]) {
    let body = serde_json::json!({ "error": reason }).to_string();
    let phrase = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let mut head = format!(
        "HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(&body);
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
}
