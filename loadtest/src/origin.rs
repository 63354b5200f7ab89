//! The built-in origin server (hyper 1, HTTP/1.1, keep-alive): serves the synthetic
//! artifacts of [`crate::content`] at `/artifact/<size>/<index>`, and any real files it
//! was given (package files at `/files/<name>`, index pages), over plain HTTP and over TLS with the origin's test CA,
//! on loopback only. Optional slow mode caps each response's bandwidth; optional error
//! mode answers a fraction of requests 404 or 500. Files are sent from memory. A
//! synthetic artifact is generated whole on its first request and kept (within
//! [`GENERATED_BUDGET`] bytes in all), so later responses are slices of shared bytes as a
//! file's are: the origin shares the cores with the proxy under test, and generating
//! every byte served cost it a fifth of a core at 800 MB/s. Beyond the budget, bodies
//! are generated chunk by chunk as the connection drains them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;

use crate::content::{Artifact, CHUNK, ServedFile, fill, splitmix64};
use crate::tls::OriginPki;

/// What the origin serves besides synthetic artifacts, and how it misbehaves on purpose.
#[derive(Debug, Clone, Default)]
pub struct OriginBehaviour {
    /// Bytes per second per response; `None` serves as fast as the connection drains.
    pub bandwidth: Option<u64>,
    /// Fraction (0..=1) of requests answered 404 or 500 (half each) instead of the artifact.
    pub error_rate: f64,
    /// Real files, served at their paths.
    pub files: Vec<ServedFile>,
}

/// A running origin; its listeners stop when it is dropped.
pub struct Origin {
    http: SocketAddr,
    https: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Origin {
    /// Starts the HTTP and HTTPS listeners on free loopback ports.
    pub async fn start(pki: &OriginPki, behaviour: OriginBehaviour) -> std::io::Result<Origin> {
        let files = behaviour
            .files
            .iter()
            .map(|f| (f.path.clone(), f.bytes.clone()))
            .collect();
        let state = Arc::new(State {
            behaviour,
            files,
            generated: Mutex::default(),
            generated_budget: GENERATED_BUDGET,
            counter: AtomicU64::new(0),
        });
        let http_listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let https_listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let http = http_listener.local_addr()?;
        let https = https_listener.local_addr()?;
        let acceptor = TlsAcceptor::from(pki.server_config());
        let tasks = vec![
            tokio::spawn(accept_loop(http_listener, None, state.clone())),
            tokio::spawn(accept_loop(https_listener, Some(acceptor), state)),
        ];
        Ok(Origin { http, https, tasks })
    }

    /// The plain HTTP listener.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// The TLS listener.
    pub fn https_addr(&self) -> SocketAddr {
        self.https
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The most bytes of synthetic artifacts kept generated.
pub const GENERATED_BUDGET: u64 = 512 << 20;

struct State {
    behaviour: OriginBehaviour,
    /// The files' contents by path.
    files: HashMap<String, Bytes>,
    /// Synthetic artifacts generated so far, and their total size.
    generated: Mutex<(HashMap<Artifact, Bytes>, u64)>,
    /// The most bytes `generated` may hold.
    generated_budget: u64,
    counter: AtomicU64,
}

impl State {
    /// The content of `artifact`, generated now if it fits in what is left of
    /// the budget; `None` if it does not.
    fn generated(&self, artifact: Artifact) -> Option<Bytes> {
        {
            let kept = self.generated.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(bytes) = kept.0.get(&artifact) {
                return Some(bytes.clone());
            }
            if kept.1.saturating_add(artifact.size) > self.generated_budget {
                return None;
            }
        }
        // Generated outside the lock; a concurrent first request may generate it too, and
        // the first one kept is the one served from then on (the bytes are the same).
        let mut content = vec![0u8; usize::try_from(artifact.size).ok()?];
        fill(artifact.seed(), 0, &mut content);
        let mut kept = self.generated.lock().unwrap_or_else(|e| e.into_inner());
        let (map, total) = &mut *kept;
        if let Some(bytes) = map.get(&artifact) {
            return Some(bytes.clone());
        }
        if total.saturating_add(artifact.size) > self.generated_budget {
            return None;
        }
        *total += artifact.size;
        let bytes = Bytes::from(content);
        map.insert(artifact, bytes.clone());
        Some(bytes)
    }
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors or similar: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        serve(stream, state).await;
                    }
                }
                None => serve(stream, state).await,
            }
        });
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(stream: S, state: Arc<State>) {
    let service = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(respond(&req, &state)) }
    });
    // A client going away mid-response is normal under load; nothing to report here.
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

fn respond(req: &Request<Incoming>, state: &State) -> Response<ArtifactBody> {
    let path = req.uri().path();
    if req.method() != hyper::Method::GET {
        return error(StatusCode::NOT_FOUND);
    }
    let source = match (Artifact::from_path(path), state.files.get(path)) {
        (Some(a), _) => state
            .generated(a)
            .map_or(Source::Generated(a), Source::Held),
        (None, Some(bytes)) => Source::Held(bytes.clone()),
        (None, None) => return error(StatusCode::NOT_FOUND),
    };
    let b = &state.behaviour;
    if b.error_rate > 0.0 {
        let draw = splitmix64(state.counter.fetch_add(1, Ordering::Relaxed));
        if ((draw >> 11) as f64 / (1u64 << 53) as f64) < b.error_rate {
            return error(if draw & 1 == 0 {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            });
        }
    }
    let body = ArtifactBody::new(source, b.bandwidth);
    let size = body.size;
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(hyper::header::CONTENT_LENGTH, size.into());
    response
}

/// An error response whose body is itself a tiny deterministic artifact.
fn error(status: StatusCode) -> Response<ArtifactBody> {
    let body = ArtifactBody::new(
        Source::Generated(Artifact {
            size: 16,
            index: u32::from(status.as_u16()),
        }),
        None,
    );
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_LENGTH, 16.into());
    response
}

/// Where a body's bytes come from.
enum Source {
    /// Generated chunk by chunk as the body is sent.
    Generated(Artifact),
    /// Held in memory: a file, or a synthetic artifact generated before.
    Held(Bytes),
}

/// A streamed artifact body, optionally paced to a bandwidth.
pub struct ArtifactBody {
    /// The content stream's seed, for a generated body.
    seed: u64,
    /// The content, for a body held in memory.
    held: Option<Bytes>,
    offset: u64,
    size: u64,
    pace: Option<Pace>,
}

struct Pace {
    bytes_per_sec: u64,
    start: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl ArtifactBody {
    fn new(source: Source, bandwidth: Option<u64>) -> ArtifactBody {
        let (seed, held, size) = match source {
            Source::Generated(a) => (a.seed(), None, a.size),
            Source::Held(bytes) => {
                let size = bytes.len() as u64;
                (0, Some(bytes), size)
            }
        };
        ArtifactBody {
            seed,
            held,
            offset: 0,
            size,
            pace: bandwidth.filter(|b| *b > 0).map(|bytes_per_sec| Pace {
                bytes_per_sec,
                start: Instant::now(),
                sleep: None,
            }),
        }
    }
}

impl Body for ArtifactBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.offset >= this.size {
            return Poll::Ready(None);
        }
        let mut n = (this.size - this.offset).min(CHUNK as u64);
        if let Some(pace) = &mut this.pace {
            // Send at most a twentieth of a second's worth at once, and never ahead of
            // the schedule `offset / bytes_per_sec` after the start.
            n = n.min((pace.bytes_per_sec / 20).max(1));
            let due = pace.start
                + Duration::from_secs_f64(this.offset as f64 / pace.bytes_per_sec as f64);
            if due > Instant::now() {
                let sleep = pace
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                sleep.as_mut().reset(due);
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
        }
        let chunk = match &this.held {
            Some(bytes) => bytes.slice(this.offset as usize..(this.offset + n) as usize),
            None => {
                let mut chunk = vec![0u8; n as usize];
                fill(this.seed, this.offset, &mut chunk);
                Bytes::from(chunk)
            }
        };
        this.offset += n;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.offset >= self.size
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.size - self.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn state(generated_budget: u64) -> State {
        State {
            behaviour: OriginBehaviour::default(),
            files: HashMap::new(),
            generated: Mutex::default(),
            generated_budget,
            counter: AtomicU64::new(0),
        }
    }

    #[test]
    fn artifacts_are_generated_once_and_kept_within_the_budget() {
        let state = state(100);
        let a = Artifact { size: 60, index: 1 };
        let b = Artifact { size: 60, index: 2 };
        let first = state.generated(a).unwrap();
        let mut expected = vec![0u8; 60];
        fill(a.seed(), 0, &mut expected);
        assert_eq!(&first[..], &expected[..]);
        // The same bytes, not generated again.
        assert_eq!(state.generated(a).unwrap().as_ptr(), first.as_ptr());
        // 120 bytes would exceed the budget of 100: b is generated as it is sent.
        assert!(state.generated(b).is_none());
        let body = ArtifactBody::new(Source::Generated(b), None);
        assert!(body.held.is_none());
    }

    #[tokio::test]
    async fn held_and_generated_bodies_carry_the_same_bytes() {
        let a = Artifact {
            size: 3 * CHUNK as u64 + 5,
            index: 7,
        };
        let held = state(u64::MAX).generated(a).unwrap();
        let from_held = ArtifactBody::new(Source::Held(held), None).collect().await;
        let generated = ArtifactBody::new(Source::Generated(a), None)
            .collect()
            .await;
        let (Ok(from_held), Ok(generated)) = (from_held, generated);
        assert_eq!(from_held.to_bytes(), generated.to_bytes());
    }

    #[tokio::test]
    async fn a_paced_body_takes_as_long_as_its_bandwidth_says() {
        let artifact = Artifact {
            size: 40_000,
            index: 0,
        };
        let started = std::time::Instant::now();
        let body = ArtifactBody::new(Source::Generated(artifact), Some(100_000));
        let bytes = body.collect().await.map(|c| c.to_bytes());
        let elapsed = started.elapsed();
        let Ok(bytes) = bytes;
        assert_eq!(bytes.len(), 40_000);
        // 40 kB at 100 kB/s: the last chunk is due at 0.35 s.
        assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
        let mut expected = vec![0u8; 40_000];
        fill(artifact.seed(), 0, &mut expected);
        assert_eq!(&bytes[..], &expected[..]);
    }
}
