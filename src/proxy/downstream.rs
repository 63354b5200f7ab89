//! The builder's side of a connection, as the pipeline reads and writes it.
//!
//! Every downstream stream (plain, or the decrypted side of a tunnel) is wrapped in a
//! [`DownstreamStream`], which adds two things to Pingora's stream:
//!
//! - **The durability gate.** Pingora's response-body hook is synchronous, so the
//!   pipeline cannot wait there for the audit log without blocking a runtime thread.
//!   When a chunk completes a download, the pipeline submits the record and arms the
//!   connection's [`DurabilityGate`] with the pending write, and the stream lets no byte
//!   of that chunk (nor anything after it) reach the builder until the write has
//!   completed. A failed write fails the stream for good, so the builder sees a reset
//!   instead of a complete download that was never recorded. The write runs as its own
//!   task: it completes even if the builder disconnects before the next write.
//! - **Write coalescing.** Writes smaller than an MSS are gathered and leave together
//!   at the next flush (Pingora flushes at the end of each response), so a small
//!   response's head and body take one `send`, as Pingora's own listeners buffer them.
//!   The buffer is freed while the connection is idle.
//! - **A cheap idle wait.** Between requests on a kept-alive connection the listener
//!   waits in [`DownstreamStream::wait_for_data`] instead of inside Pingora's request
//!   handling, whose state is far larger. The wait holds no buffer: what arrives is read
//!   through a buffer on the stack and kept (usually the whole next request head, so
//!   Pingora parses it without another read).
//! - **A deadline for each request head** ([`HeadClock`]). Pingora's read timeout
//!   applies to each read, so a head trickled one byte at a time (slowloris) would
//!   never time out on its own.

use std::fmt;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use fetchgate_storage::{AuditLog, AuditRecord, SessionId};
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    Stream, TimingDigest, UniqueID, UniqueIDType,
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::JoinHandle;

/// The state of a connection's gate.
enum GateState {
    /// Nothing pending: bytes pass.
    Open,
    /// A download's record is being written: its last bytes wait.
    Pending(JoinHandle<Result<(), String>>),
    /// A record could not be written: the connection is unusable.
    Failed(String),
}

/// A connection's gate, shared by its stream and the requests it carries.
#[derive(Clone)]
pub struct DurabilityGate(Arc<Mutex<GateState>>);

impl fmt::Debug for DurabilityGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &*self.state() {
            GateState::Open => "open",
            GateState::Pending(_) => "pending",
            GateState::Failed(_) => "failed",
        };
        f.debug_tuple("DurabilityGate").field(&state).finish()
    }
}

impl Default for DurabilityGate {
    fn default() -> Self {
        DurabilityGate(Arc::new(Mutex::new(GateState::Open)))
    }
}

impl DurabilityGate {
    fn state(&self) -> MutexGuard<'_, GateState> {
        // The state is a plain value: a panic elsewhere cannot leave it half-updated.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts writing `record` and closes the gate until it is durable (and any write
    /// armed earlier, should the stream not have been written to since).
    pub fn arm(&self, log: Arc<dyn AuditLog>, session: SessionId, record: AuditRecord) {
        let mut state = self.state();
        let earlier = match std::mem::replace(&mut *state, GateState::Open) {
            GateState::Open => None,
            GateState::Pending(write) => Some(write),
            failed @ GateState::Failed(_) => {
                *state = failed;
                None
            }
        };
        let write = tokio::spawn(async move {
            let this = log.append(session, record).await.map(drop).map_err(|e| {
                tracing::error!(%session, error = %e, "audit record not written; resetting the download");
                format!("audit log write failed: {e}")
            });
            let earlier = match earlier {
                Some(write) => write
                    .await
                    .unwrap_or_else(|e| Err(format!("audit log write did not finish: {e}"))),
                None => Ok(()),
            };
            earlier.and(this)
        });
        if matches!(*state, GateState::Open) {
            *state = GateState::Pending(write);
        }
    }

    /// Ready once every armed write has completed; an error if one failed.
    fn poll_open(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.state();
        let outcome = match &mut *state {
            GateState::Open => return Poll::Ready(Ok(())),
            GateState::Failed(reason) => return Poll::Ready(Err(io::Error::other(reason.clone()))),
            GateState::Pending(write) => ready!(Pin::new(write).poll(cx)),
        };
        match outcome {
            Ok(Ok(())) => {
                *state = GateState::Open;
                Poll::Ready(Ok(()))
            }
            Ok(Err(reason)) => {
                *state = GateState::Failed(reason.clone());
                Poll::Ready(Err(io::Error::other(reason)))
            }
            Err(join) => {
                let reason = format!("audit log write did not finish: {join}");
                *state = GateState::Failed(reason.clone());
                Poll::Ready(Err(io::Error::other(reason)))
            }
        }
    }
}

/// Whether the request head being read on a connection was completed in time.
///
/// The listener starts the clock when a request's first bytes arrive and races Pingora's
/// request handling against [`HeadClock::expired`]; the pipeline marks the head read as
/// soon as Pingora hands the request over. Shared by a connection and its requests.
#[derive(Clone, Debug, Default)]
pub struct HeadClock(Arc<AtomicBool>);

impl HeadClock {
    /// A new request head is being read.
    pub fn start(&self) {
        self.0.store(false, Ordering::Release);
    }

    /// The request head is complete.
    pub fn head_read(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Resolves after `limit` if the head has not been read by then; otherwise never.
    pub async fn expired(&self, limit: Duration) {
        tokio::time::sleep(limit).await;
        if self.0.load(Ordering::Acquire) {
            std::future::pending::<()>().await;
        }
    }
}

/// The most [`DownstreamStream::wait_for_data`] reads at once.
const READ_AHEAD: usize = 4096;

/// Writes shorter than this are gathered until the next flush: Pingora's own L4 write
/// buffer size, one MSS.
const WRITE_BUFFER: usize = pingora::protocols::l4::stream::DEFAULT_L4_WRITE_BUFFER_SIZE;

/// A downstream connection whose writes wait for its [`DurabilityGate`].
#[derive(Debug)]
pub struct DownstreamStream {
    inner: Stream,
    gate: DurabilityGate,
    /// What [`DownstreamStream::wait_for_data`] read, handed out first.
    read_ahead: Bytes,
    /// Bytes past the gate, not yet handed to `inner` (at most [`WRITE_BUFFER`]).
    unsent: Vec<u8>,
}

impl DownstreamStream {
    pub fn new(inner: Stream, gate: DurabilityGate) -> Self {
        DownstreamStream {
            inner,
            gate,
            read_ahead: Bytes::new(),
            unsent: Vec::new(),
        }
    }

    /// Waits until the builder sends something (`true`) or closes the connection
    /// (`false`); what arrived stays to be read.
    pub async fn wait_for_data(&mut self) -> io::Result<bool> {
        if !self.read_ahead.is_empty() {
            return Ok(true);
        }
        if self.unsent.is_empty() {
            // An idle connection keeps no write buffer.
            self.unsent = Vec::new();
        }
        let inner = &mut self.inner;
        let arrived = std::future::poll_fn(|cx| {
            // On the stack of this poll only: the waiting future holds no buffer.
            let mut stack = [const { MaybeUninit::<u8>::uninit() }; READ_AHEAD];
            let mut buf = ReadBuf::uninit(&mut stack);
            ready!(Pin::new(&mut *inner).poll_read(cx, &mut buf))?;
            Poll::Ready(Ok::<_, io::Error>(Bytes::copy_from_slice(buf.filled())))
        })
        .await?;
        self.read_ahead = arrived;
        Ok(!self.read_ahead.is_empty())
    }
}

impl AsyncRead for DownstreamStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() > 0 && !self.read_ahead.is_empty() {
            let n = buf.remaining().min(self.read_ahead.len());
            buf.put_slice(&self.read_ahead.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl DownstreamStream {
    /// Hands every gathered byte to `inner`.
    fn poll_send_unsent(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut sent = 0;
        let result = loop {
            if sent == self.unsent.len() {
                break Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.inner).poll_write(cx, &self.unsent[sent..]) {
                Poll::Ready(Ok(0)) => {
                    break Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero)));
                }
                Poll::Ready(Ok(n)) => sent += n,
                other => break other.map_ok(drop),
            }
        };
        self.unsent.drain(..sent);
        result
    }

    /// Makes room for `len` more bytes: gathers them (`true`) if they fit in the
    /// buffer once it is sent, or leaves them to be written through (`false`).
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        if self.unsent.len() + len > WRITE_BUFFER {
            ready!(self.poll_send_unsent(cx))?;
        }
        if len >= WRITE_BUFFER {
            return Poll::Ready(Ok(false));
        }
        if self.unsent.capacity() == 0 {
            self.unsent.reserve_exact(WRITE_BUFFER);
        }
        Poll::Ready(Ok(true))
    }
}

impl AsyncWrite for DownstreamStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.gate.poll_open(cx))?;
        if ready!(self.poll_room(cx, buf.len()))? {
            self.unsent.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.gate.poll_open(cx))?;
        let len = bufs.iter().map(|b| b.len()).sum();
        if ready!(self.poll_room(cx, len))? {
            for b in bufs {
                self.unsent.extend_from_slice(b);
            }
            return Poll::Ready(Ok(len));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.gate.poll_open(cx))?;
        ready!(self.poll_send_unsent(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.gate.poll_open(cx))?;
        ready!(self.poll_send_unsent(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for DownstreamStream {
    async fn shutdown(&mut self) {
        // What was gathered still goes out, once the gate lets it.
        if let Err(e) = std::future::poll_fn(|cx| {
            ready!(self.gate.poll_open(cx))?;
            self.poll_send_unsent(cx)
        })
        .await
        {
            tracing::debug!(error = %e, "unsent bytes dropped at shutdown");
        }
        self.inner.shutdown().await
    }
}

impl UniqueID for DownstreamStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for DownstreamStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for DownstreamStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for DownstreamStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for DownstreamStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for DownstreamStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use fetchgate_storage::{Counters, Denied, DeniedStage, Timestamp};
    use pingora::protocols::l4::stream::Stream as L4Stream;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::{Mutex as AsyncMutex, oneshot};

    use super::*;

    /// An audit log whose one append completes when the test says so, as it says.
    struct HeldLog(AsyncMutex<Option<oneshot::Receiver<fetchgate_storage::Result<u64>>>>);

    #[async_trait]
    impl AuditLog for HeldLog {
        async fn append(&self, _: SessionId, _: AuditRecord) -> fetchgate_storage::Result<u64> {
            let release = self.0.lock().await.take().expect("one append per test");
            release.await.expect("the test releases the append")
        }
        async fn scan(&self, _: SessionId) -> fetchgate_storage::Result<Vec<AuditRecord>> {
            unreachable!("the gate only appends")
        }
        async fn counters(&self, _: SessionId) -> fetchgate_storage::Result<Counters> {
            unreachable!("the gate only appends")
        }
        async fn delete(&self, _: SessionId) -> fetchgate_storage::Result<()> {
            unreachable!("the gate only appends")
        }
        async fn sessions_with_artifact(
            &self,
            _: [u8; 32],
        ) -> fetchgate_storage::Result<Vec<SessionId>> {
            unreachable!("the gate only appends")
        }
        async fn check_writable(&self) -> fetchgate_storage::Result<()> {
            unreachable!("the gate only appends")
        }
        async fn artifacts_named(
            &self,
            _: &str,
            _: &str,
            _: Option<&str>,
        ) -> fetchgate_storage::Result<Vec<([u8; 32], SessionId)>> {
            unreachable!("the gate only appends")
        }
    }

    fn record() -> AuditRecord {
        AuditRecord::Denied(Denied {
            time: Timestamp::now(),
            method: "GET".into(),
            url: "http://example.test/".into(),
            client_address: "127.0.0.1".into(),
            reason: "test".into(),
            stage: DeniedStage::Acl,
        })
    }

    /// A gated server end and the plain client end of a loopback connection, and the
    /// control over the one append the gate will wait for.
    async fn gated_pair() -> (
        DownstreamStream,
        TcpStream,
        DurabilityGate,
        Arc<dyn AuditLog>,
        oneshot::Sender<fetchgate_storage::Result<u64>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let gate = DurabilityGate::default();
        let stream = DownstreamStream::new(Box::new(L4Stream::from(server)), gate.clone());
        let (release, held) = oneshot::channel();
        let log: Arc<dyn AuditLog> = Arc::new(HeldLog(AsyncMutex::new(Some(held))));
        (stream, client, gate, log, release)
    }

    #[tokio::test]
    async fn the_last_bytes_wait_until_the_record_is_durable() {
        let (mut server, mut client, gate, log, release) = gated_pair().await;
        server.write_all(b"body ").await.unwrap();
        server.flush().await.unwrap();
        gate.arm(log, SessionId::from_bytes([1; 16]), record());
        let writer = tokio::spawn(async move {
            server.write_all(b"end").await?;
            server.flush().await?;
            Ok::<_, io::Error>(server)
        });
        let mut got = [0u8; 5];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"body ");
        // Nothing more arrives while the record is not durable.
        let mut more = [0u8; 3];
        let early =
            tokio::time::timeout(Duration::from_millis(200), client.read_exact(&mut more)).await;
        assert!(
            early.is_err(),
            "bytes passed the gate before the record was written"
        );
        release.send(Ok(0)).unwrap();
        client.read_exact(&mut more).await.unwrap();
        assert_eq!(&more, b"end");
        writer.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn small_writes_leave_together_at_the_flush_and_large_ones_at_once() {
        let (mut server, mut client, ..) = gated_pair().await;
        server.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        server.write_all(b"small body").await.unwrap();
        let mut got = [0u8; 29];
        let early =
            tokio::time::timeout(Duration::from_millis(200), client.read_exact(&mut got)).await;
        assert!(early.is_err(), "small writes were sent before the flush");
        server.flush().await.unwrap();
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"HTTP/1.1 200 OK\r\n\r\nsmall body");

        // A large write goes out without a flush, after what was gathered before it.
        server.write_all(b"tail of a head ").await.unwrap();
        let large = vec![7u8; WRITE_BUFFER * 3];
        server.write_all(&large).await.unwrap();
        let mut got = vec![0u8; 15 + large.len()];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..15], b"tail of a head ");
        assert_eq!(&got[15..], &large[..]);
    }

    #[tokio::test]
    async fn a_failed_record_fails_the_stream_for_good() {
        let (mut server, mut client, gate, log, release) = gated_pair().await;
        gate.arm(log, SessionId::from_bytes([2; 16]), record());
        release
            .send(Err(fetchgate_storage::Error::Backend("disk full".into())))
            .unwrap();
        let err = server.write_all(b"end").await.unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        let err = server.write_all(b"later").await.unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        drop(server);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "{rest:?} reached the client");
    }

    #[tokio::test]
    async fn waiting_for_data_keeps_every_byte_for_the_reader() {
        let (mut server, mut client, ..) = gated_pair().await;
        let waiter = tokio::spawn(async move {
            let arrived = server.wait_for_data().await.unwrap();
            (arrived, server)
        });
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let (arrived, mut server) = waiter.await.unwrap();
        assert!(arrived);
        // Handed out across reads smaller than what was read ahead, in order.
        let mut head = Vec::new();
        while head.len() < 18 {
            let mut piece = [0u8; 5];
            let n = server.read(&mut piece).await.unwrap();
            head.extend_from_slice(&piece[..n]);
        }
        assert_eq!(head, b"GET / HTTP/1.1\r\n\r\n");
        drop(client);
        assert!(
            !server.wait_for_data().await.unwrap(),
            "a closed connection"
        );
    }
}
