//! The request pipeline: fetchgate's `ProxyHttp` implementation, one hook per phase of
//! a download, for plain absolute-form requests and for requests decrypted inside a
//! CONNECT tunnel alike.
//!
//! - `request_filter`: who is asking (session auth, 407), where to (target, ACL, DNS,
//!   403), directly or through an upstream proxy, before any upstream connection is made;
//! - `upstream_peer`: the already-resolved and ACL-checked address (or the upstream
//!   proxy's, with a `CONNECT` tunnel for HTTPS), TLS verified with SNI = the requested
//!   host;
//! - `request_body_filter`: a request body (git's list of wanted commits) shown to the
//!   inspectors on its way upstream;
//! - `upstream_request_filter`: origin-form (absolute-form to an upstream proxy),
//!   credentials stripped, secrets injected;
//! - after the ACL, in `request_filter`: the inspectors' request opinions; a strict
//!   session refuses (403, recorded `policy`) what no inspector recognises;
//! - `response_filter` / `response_body_filter`: status and headers captured, the body
//!   hashed and shown to the inspectors while it streams; the chunk that completes the
//!   body arms the connection's durability gate once the verdict is in, so it reaches
//!   the builder only once the download's audit record is durable. An audit failure,
//!   or in a strict session an artifact that is not approved, resets the connection:
//!   the builder never sees a clean end;
//! - `fail_to_proxy` / `logging`: failures answered (502/504) and recorded.
//!
//! Nothing here may connect anywhere the ACL has not approved.

use std::any::Any;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use fetchgate_storage::{
    AuditRecord, Denied, DeniedStage, Download, Failure, HeaderList, Policy, SessionHeader,
    SessionId, Timestamp,
};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use super::acl::Acl;
use super::auth::{self, Refusal};
use super::downstream::{DurabilityGate, HeadClock};
use super::limits::{InFlight, SessionLimiter};
use super::resolver::Resolver;
use super::target::{HostPort, Scheme, Target};
use super::upstream::{ProxyEndpoint, TunnelConnector, UpstreamProxies};
use crate::audit::digest::BodyHasher;
use crate::audit::report::approved;
use crate::idle::Activity;
use crate::inspect::{DownloadInspection, Inspectors, RequestInfo, StrictAction, Verdict};
use crate::session::Sessions;
use crate::telemetry::{ProxyMetrics, SECURITY, metric};

/// What a CONNECT established, carried to every request inside its tunnel.
#[derive(Debug, Clone)]
pub struct Tunnel {
    pub session: SessionId,
    pub dest: HostPort,
}

/// What a downstream connection carries to each of its requests.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The CONNECT the requests arrive in, if any.
    pub tunnel: Option<Tunnel>,
    /// Holds back the end of each download until its record is durable.
    pub gate: DurabilityGate,
    /// Told when each request's head has been read (the listener's head deadline).
    pub head: HeadClock,
    /// The builder's address (`ip:port`), as the audit records show it.
    pub client: Arc<str>,
}

/// Timeouts for upstream connections.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    pub read: Duration,
    /// How long an upstream connection may wait in the keep-alive pool.
    pub idle: Duration,
}

/// The pipeline's shared state.
pub struct Pipeline {
    pub sessions: Arc<Sessions>,
    pub acl: Arc<Acl>,
    pub activity: Arc<Activity>,
    pub timeouts: UpstreamTimeouts,
    pub limiter: Arc<SessionLimiter>,
    pub upstreams: UpstreamProxies,
    /// Upstream host names to addresses (`proxy.dns-cache-ttl`).
    pub resolver: Resolver,
    pub inspectors: Arc<Inspectors>,
    /// Largest request head (`proxy.max-header-bytes`): beyond it, 431.
    pub max_head_bytes: usize,
    pub metrics: ProxyMetrics,
}

/// The response as the builder received it.
struct ResponseInfo {
    status_code: u16,
    status: String,
    content_type: Option<String>,
    content_length: Option<u64>,
    headers: HeaderList,
}

/// Per-request state.
pub struct RequestCtx {
    tunnel: Option<Tunnel>,
    gate: Option<DurabilityGate>,
    head: Option<HeadClock>,
    session: Option<SessionHeader>,
    target: Option<Target>,
    upstream: Option<SocketAddr>,
    /// When the upstream was picked, for the upstream latency histogram.
    upstream_start: Option<std::time::Instant>,
    /// The upstream proxy the request goes through (`upstream` is then its address).
    via: Option<Arc<ProxyEndpoint>>,
    start: Timestamp,
    /// From the connection's context (`Connection::client`).
    client: Arc<str>,
    user_agent: Option<String>,
    request_headers: HeaderList,
    response: Option<ResponseInfo>,
    hasher: BodyHasher,
    failure: Option<(u16, Failure)>,
    /// The request target as sent, for records of requests whose target is invalid.
    raw_target: String,
    /// Set once the request's record (download or denial) is written.
    recorded: bool,
    /// This request's place in its session's concurrency budget.
    inflight: Option<InFlight>,
    /// The inspectors' opinions and body observers.
    inspection: Option<DownloadInspection>,
    /// The inspectors' verdict on the complete body.
    verdict: Option<Verdict>,
}

impl RequestCtx {
    fn new() -> Self {
        RequestCtx {
            tunnel: None,
            gate: None,
            head: None,
            session: None,
            target: None,
            upstream: None,
            upstream_start: None,
            via: None,
            start: Timestamp::now(),
            client: Arc::default(),
            user_agent: None,
            request_headers: HeaderList::default(),
            response: None,
            hasher: BodyHasher::default(),
            failure: None,
            raw_target: String::new(),
            recorded: false,
            inflight: None,
            inspection: None,
            verdict: None,
        }
    }
}

/// The error a strict session's rejected download ends with: the connection is reset
/// (or, if no byte of the response went out yet, answered 403).
const CUT_OFF: &str = "policy";

/// Header names never copied into the audit log.
const SECRET_HEADERS: [&str; 2] = ["proxy-authorization", "authorization"];

/// The headers as the audit log keeps them: each name once with all its values, minus
/// credentials.
fn header_list(headers: &http::HeaderMap) -> HeaderList {
    // Most headers take under 48 bytes.
    let mut out = HeaderList::with_capacity(headers.keys_len(), headers.len(), headers.len() * 48);
    for (name, value) in headers {
        if SECRET_HEADERS.contains(&name.as_str()) {
            continue;
        }
        // Visible ASCII (nearly every value) is checked by a plain byte loop; anything
        // else is read lossily.
        match value.to_str() {
            Ok(v) => out.push(name.as_str(), v),
            Err(_) => out.push(name.as_str(), &String::from_utf8_lossy(value.as_bytes())),
        }
    }
    out
}

/// Longest request target forwarded; beyond it, 414.
const MAX_TARGET_BYTES: usize = 8 * 1024;

/// Refuses (status, reason) a request head before anything is forwarded: a head too
/// large, or body framing that the origin could read differently from us (request
/// smuggling): several `Content-Length`s, a `Transfer-Encoding` other than `chunked`.
/// (`Content-Length` with `Transfer-Encoding` never gets here: Pingora frames the body
/// by the latter, removes the former and closes the connection after, RFC 9112 6.3.)
fn check_head(
    req: &RequestHeader,
    max_head_bytes: usize,
) -> std::result::Result<(), (u16, String)> {
    if req.raw_path().len() > MAX_TARGET_BYTES {
        return Err((
            414,
            format!("request target longer than {MAX_TARGET_BYTES} bytes"),
        ));
    }
    let head: usize = req
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if head > max_head_bytes {
        return Err((
            431,
            format!("request header fields larger than {max_head_bytes} bytes"),
        ));
    }
    let lengths = req
        .headers
        .get_all(http::header::CONTENT_LENGTH)
        .iter()
        .count();
    let mut encodings = req
        .headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .peekable();
    if encodings.peek().is_some() {
        let chunked_only = encodings.count() == 1
            && req
                .headers
                .get(http::header::TRANSFER_ENCODING)
                .is_some_and(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked"));
        if !chunked_only {
            return Err((
                400,
                "Transfer-Encoding other than chunked is refused".into(),
            ));
        }
    }
    if lengths > 1 {
        return Err((400, "more than one Content-Length is refused".into()));
    }
    Ok(())
}

/// Writes a complete JSON error response; returns `Ok(true)` for `request_filter`.
async fn respond(
    session: &mut Session,
    status: u16,
    reason: &str,
    extra: &[(&'static str, &'static str)],
) -> Result<bool> {
    let body = Bytes::from(serde_json::json!({ "error": reason }).to_string());
    let mut resp = ResponseHeader::build(status, Some(4 + extra.len()))?;
    resp.insert_header("Content-Type", "application/json")?;
    resp.insert_header("Content-Length", body.len().to_string())?;
    for (k, v) in extra {
        resp.insert_header(*k, *v)?;
    }
    session.set_keepalive(None);
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(true)
}

fn failure_stage(e: &Error, via_proxy: bool) -> (&'static str, u16) {
    use ErrorType::*;
    match (e.esource(), e.etype()) {
        (_, ConnectProxyFailure) => ("upstream-proxy", 502),
        (
            _,
            ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError | BindError
            | SocketError,
        ) if via_proxy => ("upstream-proxy", 502),
        (_, ConnectTimedout) => ("upstream-connect", 504),
        (_, ConnectRefused | ConnectNoRoute | ConnectError | BindError | SocketError) => {
            ("upstream-connect", 502)
        }
        (
            _,
            TLSHandshakeFailure | TLSHandshakeTimedout | InvalidCert | HandshakeError
            | TLSWantX509Lookup,
        ) => ("upstream-tls", 502),
        (ErrorSource::Upstream, ReadTimedout | WriteTimedout) => ("upstream-timeout", 504),
        (ErrorSource::Upstream, _) => ("upstream", 502),
        (ErrorSource::Downstream, _) => ("client-abort", 400),
        _ => ("internal", 500),
    }
}

/// Why a destination cannot be connected to.
enum Unroutable {
    /// The ACL refuses it (403).
    Acl(String),
    /// A lookup failed (502), at `stage` `dns` or `upstream-proxy`.
    Failed { stage: &'static str, reason: String },
}

impl Pipeline {
    /// The ACL-approved address to connect to for `dest`: one of its own addresses, or,
    /// through an upstream proxy, the proxy's. Through a proxy every address `dest`
    /// resolves to here must pass the ACL (the proxy resolves it again and may pick any);
    /// a name that does not resolve here is left to the proxy, with host globs (and IP
    /// literals) already checked.
    async fn route(
        &self,
        dest: &HostPort,
        via: Option<&ProxyEndpoint>,
    ) -> std::result::Result<SocketAddr, Unroutable> {
        let resolved = self.resolver.resolve(&dest.host, dest.port).await;
        let Some(proxy) = via else {
            let addrs = resolved.map_err(|e| Unroutable::Failed {
                stage: "dns",
                reason: format!("cannot resolve {}: {e}", dest.host),
            })?;
            let mut denial = None;
            for addr in addrs {
                match self.acl.check(addr) {
                    Ok(()) => return Ok(addr),
                    Err(d) => denial = Some(d),
                }
            }
            return Err(Unroutable::Acl(denial.map_or_else(
                || format!("{} resolved to no address", dest.host),
                |d| d.to_string(),
            )));
        };
        for addr in resolved.unwrap_or_default() {
            self.acl
                .check(addr)
                .map_err(|d| Unroutable::Acl(d.to_string()))?;
        }
        self.resolver
            .resolve(&proxy.host, proxy.port)
            .await
            .ok()
            .and_then(|a| a.into_iter().next())
            .ok_or_else(|| Unroutable::Failed {
                stage: "upstream-proxy",
                reason: format!("cannot resolve the upstream proxy {proxy}"),
            })
    }

    async fn append(
        &self,
        id: SessionId,
        record: AuditRecord,
    ) -> std::result::Result<(), fetchgate_storage::Error> {
        self.sessions.log().append(id, record).await.map(|_| ())
    }

    /// Records a refused request under its session (when known) and answers it.
    async fn deny(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        id: Option<SessionId>,
        stage: DeniedStage,
        status: u16,
        reason: String,
    ) -> Result<bool> {
        metrics::counter!(metric::PROXY_DENIED, "stage" => stage.as_str()).increment(1);
        let url = match &ctx.target {
            Some(t) => t.url().to_owned(),
            None => String::from_utf8_lossy(session.req_header().raw_path()).into_owned(),
        };
        if let Some(id) = id {
            let record = AuditRecord::Denied(Denied {
                time: Timestamp::now(),
                method: session.req_header().method.to_string(),
                url,
                client_address: ctx.client.to_string(),
                reason: reason.clone(),
                stage,
            });
            if let Err(e) = self.append(id, record).await {
                tracing::error!(session = %id, error = %e, "cannot record a denied request");
                return respond(session, 503, "the audit log is unavailable", &[]).await;
            }
        }
        ctx.recorded = true;
        let extra: &[(&str, &str)] = if status == 407 {
            &[("Proxy-Authenticate", "Basic realm=\"fetchgate\"")]
        } else {
            &[]
        };
        respond(session, status, &reason, extra).await
    }

    /// Refuses a destination the ACL denies: 403, recorded with stage `acl`, and a
    /// security-log event.
    async fn deny_acl(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        id: SessionId,
        reason: String,
    ) -> Result<bool> {
        let url = ctx.target.as_ref().map_or("", Target::url).to_owned();
        tracing::warn!(target: SECURITY, event = "acl-denial", session = %id, url = %url, reason = %reason, "destination denied");
        self.deny(session, ctx, Some(id), DeniedStage::Acl, 403, reason)
            .await
    }

    /// Authenticates the request: by its CONNECT tunnel, or by `Proxy-Authorization`.
    async fn authenticate(
        &self,
        session: &Session,
        ctx: &RequestCtx,
    ) -> std::result::Result<SessionHeader, Refusal> {
        match &ctx.tunnel {
            Some(t) => auth::recheck(&self.sessions, t.session, &ctx.client).await,
            None => {
                let header = session
                    .get_header(http::header::PROXY_AUTHORIZATION)
                    .map(|v| v.as_bytes());
                auth::authenticate(&self.sessions, header, &ctx.client).await
            }
        }
    }

    /// Records a request that did not complete a download (a failure, or an answer
    /// without a body), once.
    async fn record_unfinished(&self, session: &Session, ctx: &mut RequestCtx) {
        if ctx.recorded {
            return;
        }
        ctx.recorded = true;
        let method = session.req_header().method.to_string();
        if let Some((id, record)) = self.download_record(ctx, &method)
            && let Err(e) = self.append(id, record).await
        {
            tracing::error!(session = %id, error = %e, "cannot record a failed download");
        }
    }

    fn download_record(
        &self,
        ctx: &mut RequestCtx,
        method: &str,
    ) -> Option<(SessionId, AuditRecord)> {
        let header = ctx.session.as_ref()?;
        let url = match &ctx.target {
            Some(t) => t.url().to_owned(),
            None => ctx.raw_target.clone(),
        };
        let (status_code, status, content_type, response_headers) = match ctx.response.take() {
            Some(r) => (r.status_code, r.status, r.content_type, r.headers),
            None => match &ctx.failure {
                Some((code, _)) => (*code, status_line(*code), None, HeaderList::default()),
                None => (0, "no response".into(), None, HeaderList::default()),
            },
        };
        let body = std::mem::take(&mut ctx.hasher);
        let body = (body.size() > 0 || status_code == 200).then(|| body.finish());
        let request_inspection = ctx
            .inspection
            .as_mut()
            .map(DownloadInspection::take_request_opinions)
            .unwrap_or_default();
        let verdict = ctx.verdict.take().unwrap_or_default();
        let record = AuditRecord::Download(Box::new(Download {
            start: ctx.start,
            end: Timestamp::now(),
            method: method.to_owned(),
            url,
            client_address: ctx.client.to_string(),
            user_agent: ctx.user_agent.clone(),
            status_code,
            status,
            content_type,
            request_headers: std::mem::take(&mut ctx.request_headers),
            response_headers,
            body,
            failure: ctx.failure.as_ref().map(|(_, f)| f.clone()),
            request_inspection,
            response_inspection: verdict.response,
            metadata: verdict.metadata,
        }));
        Some((header.id, record))
    }
}

/// Applies the session's policy to a complete, inspected download: in a strict session
/// an artifact that is not approved is cut off (the reason, also recorded as the
/// download's failure); a permissive session only notes what strict would have done.
fn enforce(
    inspectors: &Inspectors,
    metrics: &ProxyMetrics,
    id: SessionId,
    d: &mut Download,
    policy: Policy,
) -> Option<String> {
    if approved(d, Policy::Strict) {
        metrics.inspected_approved.increment(1);
        return None;
    }
    let mut reasons: Vec<String> = d
        .response_inspection
        .iter()
        .filter_map(|(id, i)| i.reason.as_ref().map(|r| format!("{id}: {r}")))
        .collect();
    if reasons.is_empty() {
        reasons.push("no inspector approved the response".into());
    }
    let reason = reasons.join("; ");
    match policy {
        Policy::Strict => metrics.inspected_rejected_cut_off.increment(1),
        Policy::Permissive => metrics.inspected_rejected_passed.increment(1),
    }
    match policy {
        Policy::Strict => {
            tracing::warn!(url = %d.url, reason = %reason, "artifact rejected; cutting the download off");
            d.failure = Some(Failure {
                stage: "policy".into(),
                reason: reason.clone(),
            });
            Some(reason)
        }
        Policy::Permissive => {
            inspectors.overlooked(id, StrictAction::CutOff, &d.url, &reason);
            None
        }
    }
}

fn status_line(code: u16) -> String {
    match http::StatusCode::from_u16(code) {
        Ok(s) => format!("{} {}", code, s.canonical_reason().unwrap_or(""))
            .trim_end()
            .to_owned(),
        Err(_) => code.to_string(),
    }
}

#[async_trait]
impl ProxyHttp for Pipeline {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx::new()
    }

    /// No modules: Pingora's default adds its response compression (at level 0, so
    /// off), which would still be set up and asked about every request and body chunk.
    /// A proxy that hashes what it passes on never rewrites a body.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
        prev: Box<dyn Any + Send + Sync>,
    ) {
        // Pingora calls this as soon as the request head has been read.
        if let Ok(c) = prev.downcast::<Connection>() {
            c.head.head_read();
            ctx.tunnel = c.tunnel;
            ctx.gate = Some(c.gate);
            ctx.head = Some(c.head);
            ctx.client = c.client;
        }
    }

    fn persist_connection_context(
        &self,
        _session: &Session,
        ctx: &Self::CTX,
    ) -> Option<Box<dyn Any + Send + Sync>> {
        Some(Box::new(Connection {
            tunnel: ctx.tunnel.clone(),
            gate: ctx.gate.clone()?,
            head: ctx.head.clone()?,
            client: Arc::clone(&ctx.client),
        }))
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        self.activity.touch();
        ctx.start = Timestamp::now();
        self.metrics.requests.increment(1);

        let header = match self.authenticate(session, ctx).await {
            Ok(h) => h,
            Err(r) => {
                return self
                    .deny(
                        session,
                        ctx,
                        r.session,
                        DeniedStage::Auth,
                        r.status,
                        r.reason,
                    )
                    .await;
            }
        };
        let id = header.id;
        let policy = header.policy;
        ctx.session = Some(header);
        // A download that could not be recorded is not started (a full disk, say).
        if let Err(e) = self.sessions.log().check_writable().await {
            // Nothing can be written: `logging` must not try.
            ctx.recorded = true;
            metrics::counter!(metric::PROXY_DENIED, "stage" => "storage").increment(1);
            tracing::warn!(session = %id, error = %e, "audit log not writable; request refused");
            let reason = format!("fetchgate cannot record downloads now: {e}");
            return respond(session, 503, &reason, &[("Retry-After", "5")]).await;
        }

        let req = session.req_header();
        ctx.raw_target = String::from_utf8_lossy(req.raw_path()).into_owned();
        let target = match &ctx.tunnel {
            Some(t) => Ok(Target::new(
                Scheme::Https,
                t.dest.clone(),
                req.uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_owned(),
            )),
            None => Target::parse_absolute(req.raw_path()),
        };
        let target = match target {
            Ok(t) => t,
            Err(e) => {
                // Recorded (by `logging`) under the raw target: the builder tried it.
                ctx.failure = Some((
                    400,
                    Failure {
                        stage: "request".into(),
                        reason: e.to_string(),
                    },
                ));
                return respond(session, 400, &e.to_string(), &[]).await;
            }
        };
        if let Err((status, reason)) = check_head(req, self.max_head_bytes) {
            ctx.failure = Some((
                status,
                Failure {
                    stage: "request".into(),
                    reason: reason.clone(),
                },
            ));
            return respond(session, status, &reason, &[]).await;
        }
        ctx.user_agent = req
            .headers
            .get(http::header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        ctx.request_headers = header_list(&req.headers);
        ctx.target = Some(target.clone());

        match self.limiter.try_acquire(id) {
            Some(place) => ctx.inflight = Some(place),
            None => {
                let reason = format!(
                    "session has {} requests in flight already",
                    self.limiter.max()
                );
                metrics::counter!(metric::PROXY_DENIED, "stage" => "limit").increment(1);
                ctx.failure = Some((
                    503,
                    Failure {
                        stage: "limit".into(),
                        reason: reason.clone(),
                    },
                ));
                return respond(session, 503, &reason, &[("Retry-After", "1")]).await;
            }
        }

        if let Err(d) = self.acl.check_destination(&target.dest) {
            return self.deny_acl(session, ctx, id, d.to_string()).await;
        }
        // The policy before any name is resolved: a strict session only ever resolves
        // the hosts of origins it trusts, so refused requests cannot carry data out in
        // DNS queries.
        let url = target.url();
        let req = session.req_header();
        let method = req.method.to_string();
        let info = RequestInfo {
            method: &method,
            url,
            headers: &req.headers,
        };
        let inspection = match ctx.session.as_ref() {
            Some(h) => self.inspectors.begin(h, &info),
            None => return Err(Error::explain(ErrorType::InternalError, "no session")),
        };
        if let Some(reason) = inspection.refusal() {
            let reason = reason.to_owned();
            if policy == Policy::Strict {
                return self
                    .deny(session, ctx, Some(id), DeniedStage::Policy, 403, reason)
                    .await;
            }
            self.inspectors
                .overlooked(id, StrictAction::Refuse, url, &reason);
        }
        ctx.via = self
            .upstreams
            .for_target(target.scheme, &target.dest)
            .cloned();
        match self.route(&target.dest, ctx.via.as_deref()).await {
            Ok(addr) => ctx.upstream = Some(addr),
            Err(Unroutable::Acl(reason)) => return self.deny_acl(session, ctx, id, reason).await,
            Err(Unroutable::Failed { stage, reason }) => {
                let body = reason.clone();
                ctx.failure = Some((
                    502,
                    Failure {
                        stage: stage.into(),
                        reason,
                    },
                ));
                self.record_unfinished(session, ctx).await;
                return respond(session, 502, &body, &[]).await;
            }
        }

        ctx.inspection = Some(inspection);
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let (Some(addr), Some(target)) = (ctx.upstream, ctx.target.as_ref()) else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "no ACL-approved upstream address",
            ));
        };
        ctx.upstream_start = Some(std::time::Instant::now());
        let tls = target.scheme == Scheme::Https;
        // Never an empty SNI: pingora skips certificate verification without one.
        let mut peer = HttpPeer::new(addr, tls, target.dest.host.clone());
        if let Some(proxy) = &ctx.via {
            // `addr` is the proxy's. Plain requests go to it in absolute form; HTTPS runs
            // its TLS inside a CONNECT tunnel that our connector opens.
            if tls {
                peer.group_key = proxy.pool_key(Some(&target.dest));
                peer.options.custom_l4 = Some(Arc::new(TunnelConnector {
                    proxy: Arc::clone(proxy),
                    target: target.dest.clone(),
                    timeout: self.timeouts.connect,
                }));
            } else {
                peer.group_key = proxy.pool_key(None);
            }
        }
        peer.options.connection_timeout = Some(self.timeouts.connect);
        peer.options.total_connection_timeout = Some(self.timeouts.connect);
        peer.options.read_timeout = Some(self.timeouts.read);
        peer.options.write_timeout = Some(self.timeouts.read);
        peer.options.idle_timeout = Some(self.timeouts.idle);
        Ok(Box::new(peer))
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let Some(chunk) = body.as_ref() else {
            return Ok(());
        };
        self.metrics.bytes_up.increment(chunk.len() as u64);
        // Some requests say what they fetch in their body (git's wanted commits).
        if let Some(inspection) = ctx.inspection.as_mut() {
            inspection.request_chunk(chunk);
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let Some(target) = ctx.target.as_ref() else {
            return Err(Error::explain(ErrorType::InternalError, "no target"));
        };
        let path: http::Uri = target
            .path
            .parse()
            .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "request path", e))?;
        upstream.set_uri(path);
        upstream.remove_header("Proxy-Authorization");
        upstream.remove_header("Proxy-Connection");
        if ctx.inspection.as_ref().is_some_and(|i| i.recognised()) {
            // A part of an artifact cannot be verified: ask for all of it (a server may
            // always answer a range request with the whole body).
            upstream.remove_header("Range");
            upstream.remove_header("If-Range");
            // Nor can a body in a coding inspectors cannot read (br, zstd).
            let client = upstream
                .headers
                .get(http::header::ACCEPT_ENCODING)
                .and_then(|v| v.to_str().ok());
            match crate::inspect::spool::readable_encoding(client) {
                Some(coding) => {
                    upstream.insert_header(http::header::ACCEPT_ENCODING, coding)?;
                }
                None => {
                    upstream.remove_header(&http::header::ACCEPT_ENCODING);
                }
            }
        }
        if let Some(proxy) = ctx.via.as_ref().filter(|_| target.scheme == Scheme::Http) {
            upstream.set_raw_path(target.absolute_form().as_bytes())?;
            if let Some(auth) = proxy.authorization() {
                upstream.insert_header("Proxy-Authorization", auth)?;
            }
        }
        upstream.insert_header("Host", target.host_header())?;
        if let Some(secret) = ctx
            .session
            .as_ref()
            .and_then(|h| super::secrets::matching(&h.secrets, target.url()))
        {
            upstream.insert_header("Authorization", secret)?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _resp: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(start) = ctx.upstream_start {
            self.metrics
                .upstream_response_seconds
                .record(start.elapsed().as_secs_f64());
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(proxy) = &ctx.via
            && ctx
                .target
                .as_ref()
                .is_some_and(|t| t.scheme == Scheme::Http)
            && resp.status == http::StatusCode::PROXY_AUTHENTICATION_REQUIRED
        {
            // A plain request's 407 comes from the upstream proxy refusing fetchgate (an
            // origin behind a tunnel cannot send one): not an answer for the builder.
            return Err(Error::explain(
                ErrorType::ConnectProxyFailure,
                format!("upstream proxy {proxy}: refused with 407 Proxy Authentication Required"),
            ));
        }
        let header_str = |name| {
            resp.headers
                .get(name)
                .map(|v: &http::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        ctx.response = Some(ResponseInfo {
            status_code: resp.status.as_u16(),
            status: status_line(resp.status.as_u16()),
            content_type: header_str(http::header::CONTENT_TYPE),
            content_length: header_str(http::header::CONTENT_LENGTH)
                .and_then(|v| v.trim().parse().ok()),
            headers: header_list(&resp.headers),
        });
        Ok(())
    }

    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<Duration>> {
        if ctx.recorded {
            return Ok(None);
        }
        // Every successful body is inspected (a 206 cannot verify, so it is rejected;
        // recognised requests are fetched whole, see `upstream_request_filter`).
        let inspected = ctx
            .response
            .as_ref()
            .is_some_and(|r| (200..300).contains(&r.status_code) && r.status_code != 204);
        if let Some(chunk) = body.as_ref() {
            ctx.hasher.update(chunk);
            if inspected && let Some(inspection) = ctx.inspection.as_mut() {
                inspection.chunk(chunk);
            }
            self.metrics.bytes_down.increment(chunk.len() as u64);
        }
        let expected = ctx.response.as_ref().and_then(|r| r.content_length);
        let complete = end_of_stream || expected.is_some_and(|n| ctx.hasher.size() >= n);
        if !complete {
            return Ok(None);
        }
        // This chunk completes the download: it goes out only once the inspectors gave
        // their verdict and the record is durable.
        let method = session.req_header().method.to_string();
        if inspected && let Some(inspection) = ctx.inspection.as_mut() {
            let digests = ctx.hasher.clone().finish();
            let start = std::time::Instant::now();
            ctx.verdict = Some(if inspection.recognised() {
                // A recognised artifact's verdict may parse an index file spooled to
                // disk: a blocking section, so this worker's other tasks move on.
                tokio::task::block_in_place(|| inspection.finish(&digests))
            } else {
                inspection.finish(&digests)
            });
            self.metrics
                .inspection_seconds
                .record(start.elapsed().as_secs_f64());
        }
        let policy = ctx.session.as_ref().map_or(Policy::Strict, |h| h.policy);
        let Some((id, mut record)) = self.download_record(ctx, &method) else {
            return Ok(None);
        };
        ctx.recorded = true;
        let cut_off = match &mut record {
            AuditRecord::Download(d) if inspected => {
                enforce(&self.inspectors, &self.metrics, id, d, policy)
            }
            _ => None,
        };
        if let Some(reason) = cut_off {
            // A rejected artifact (rare): its record is durable before the connection is
            // reset, so a report read once the builder saw the failure includes it.
            let log = Arc::clone(self.sessions.log());
            let handle = tokio::runtime::Handle::current();
            if let Err(e) = tokio::task::block_in_place(|| handle.block_on(log.append(id, record)))
            {
                tracing::error!(session = %id, error = %e, "audit record of a rejected download not written");
            }
            return Err(Error::explain(ErrorType::Custom(CUT_OFF), reason));
        }
        let Some(gate) = ctx.gate.as_ref() else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "the connection has no durability gate",
            ));
        };
        gate.arm(Arc::clone(self.sessions.log()), id, record);
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let (stage, code) = match e.etype() {
            ErrorType::HTTPStatus(code) => ("request", *code),
            ErrorType::Custom(kind) if *kind == CUT_OFF => ("policy", 403),
            _ => failure_stage(e, ctx.via.is_some()),
        };
        tracing::info!(session = ?ctx.session.as_ref().map(|h| h.id), stage, error = %e, "proxy request failed");
        ctx.failure = Some((
            code,
            Failure {
                stage: stage.to_owned(),
                reason: e.to_string(),
            },
        ));
        let downstream_gone = matches!(e.esource(), ErrorSource::Downstream)
            && matches!(
                e.etype(),
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed
            );
        // Once the response head is out, nothing more may be written: an error body would
        // land inside the artifact's bytes. The connection is closed unfinished instead.
        if !downstream_gone {
            if session.response_written().is_none() {
                // Recorded before the builder sees the answer, like a refusal.
                self.record_unfinished(session, ctx).await;
                let _ = respond(session, code, &format!("{stage}: {e}"), &[]).await;
            } else {
                // What was written (the head, perhaps still gathered in the downstream
                // stream's buffer) goes out, then the connection closes unfinished.
                session.downstream_session.shutdown().await;
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Self::CTX) {
        self.record_unfinished(session, ctx).await;
        let status = session.response_written().map(|r| r.status.as_u16());
        let micros = (Timestamp::now().as_micros() - ctx.start.as_micros()).max(0);
        self.metrics
            .request_seconds(status)
            .record(micros as f64 / 1e6);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    #[test]
    fn header_list_groups_values_drops_secrets_and_reads_other_bytes_lossily() {
        let mut h = HeaderMap::new();
        h.append("accept", HeaderValue::from_static("a/b"));
        h.append(
            "proxy-authorization",
            HeaderValue::from_static("Basic eDp5"),
        );
        h.append("accept", HeaderValue::from_static("c/d"));
        h.append("authorization", HeaderValue::from_static("Bearer t"));
        // obs-text: Latin-1 "é" alone is not UTF-8; as UTF-8 it is kept.
        h.append("x-latin1", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        h.append(
            "x-utf8",
            HeaderValue::from_bytes("café".as_bytes()).unwrap(),
        );
        let list = header_list(&h);
        let get = |n: &str| list.get(n).map(Iterator::collect::<Vec<_>>);
        assert_eq!(get("accept"), Some(vec!["a/b", "c/d"]));
        assert_eq!(get("x-latin1"), Some(vec!["caf\u{fffd}"]));
        assert_eq!(get("x-utf8"), Some(vec!["café"]));
        assert_eq!(get("proxy-authorization"), None);
        assert_eq!(get("authorization"), None);
        assert_eq!(list.len(), 3);
    }
}
