//! Redis backend of [`SessionStore`] and [`NodeSets`]: the session state the two nodes
//! of an HA pair share. Audit records never come here; each node keeps its own.
//!
//! Keys (all under a configurable prefix `P`):
//! - `P session:{id}`: a hash. `header` holds the session as created (codec-encoded,
//!   token hash included); `created`, `timeout`, `revoked`, `ended` and `reason` hold
//!   what changes later, so that revocation and ending are one Lua script each, atomic
//!   on the server. The key expires with the session plus the retention period (and a
//!   day's grace: the sweepers delete it first).
//! - `P nodes:{id}`: the set of nodes that served the session, with the same expiry.
//! - `P sessions`: the set of ids, for listing (ids whose hash expired are dropped lazily).
//! - `P live`: the set of ids that have not ended, so that the reaper and `/status`
//!   read the live sessions only, not every one kept for the retention period.
//! - `P ended`: a sorted set of ended ids scored by end time, the retention queue.
//! - `P invalidate`: the pub/sub channel every change to a session is published on.
//!
//! Proxy authentication ([`SessionStore::get_for_auth`]) may be answered from a local
//! cache of live sessions for at most [`CACHE_TTL`], and only while the invalidation
//! channel is subscribed: a revocation on the other node evicts the entry at once, and a
//! lost subscription disables the cache. Every other read asks Redis.
//!
//! The connection manager reconnects by itself but fails the command that hit the
//! outage; every operation here is idempotent, so each is retried a few times.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lru::LruCache;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use tokio_stream::StreamExt;

use crate::{
    EndReason, Ended, Error, NodeId, NodeSets, Result, Retained, SessionHeader, SessionId,
    SessionStore, Timestamp, codec,
};

/// How much longer than the retention period a session's keys are kept: Redis expiring
/// them is only a safety net behind the sweepers, which must each see the session.
pub const KEY_GRACE: Duration = Duration::from_secs(24 * 3600);
/// How long a cached live session may answer reads without asking Redis.
pub const CACHE_TTL: Duration = Duration::from_secs(1);
/// Sessions whose headers are cached at most.
const CACHE_ENTRIES: usize = 4096;
/// Sessions whose hashes one pipelined read fetches.
const READ_BATCH: usize = 1000;
/// Invalidations remembered so that a read racing one is not cached. A read that more
/// than this many invalidations overtook is not cached either.
const RECENT_INVALIDATIONS: usize = 256;
/// Pauses before the retries of a command that failed on a broken connection.
const RETRY_DELAYS: [Duration; 2] = [Duration::from_millis(20), Duration::from_millis(150)];
/// How long one command or connection attempt may take before it counts as an outage.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(800);
/// How often the invalidation channel's connection is checked.
const LIVENESS_INTERVAL: Duration = Duration::from_millis(250);
/// Pause before subscribing again after the invalidation channel was lost.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(100);

/// Where the shared store lives and how long ended sessions stay in it.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// Prepended to every key and to the channel name.
    pub key_prefix: String,
    /// How long a session's data is kept after it ends. Its keys live a day longer
    /// ([`KEY_GRACE`]), so that every node's retention sweeper gets to them first.
    pub retention: Duration,
}

const CREATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'attempt') == ARGV[9] then return 1 end
  return 0
end
redis.call('HSET', KEYS[1], 'header', ARGV[1], 'created', ARGV[2], 'timeout', ARGV[3], 'attempt', ARGV[9])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'revoked', ARGV[4]) end
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'ended', ARGV[5], 'reason', ARGV[6])
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[8])
end
redis.call('PEXPIREAT', KEYS[1], ARGV[7])
redis.call('SADD', KEYS[2], ARGV[8])
if ARGV[5] == '' then redis.call('SADD', KEYS[4], ARGV[8]) end
return 1
";

const REVOKE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if redis.call('HSETNX', KEYS[1], 'revoked', ARGV[1]) == 1 then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return redis.call('HGETALL', KEYS[1])
";

const END: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if redis.call('HEXISTS', KEYS[1], 'ended') == 0 then
  redis.call('HSETNX', KEYS[1], 'revoked', ARGV[1])
  redis.call('HSET', KEYS[1], 'ended', ARGV[1], 'reason', ARGV[2])
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[5])
  local expire = math.floor(tonumber(ARGV[1]) / 1000) + tonumber(ARGV[3])
  redis.call('PEXPIREAT', KEYS[1], expire)
  redis.call('PEXPIREAT', KEYS[3], expire)
  redis.call('PUBLISH', ARGV[4], ARGV[5])
end
redis.call('SREM', KEYS[4], ARGV[5])
return redis.call('HGETALL', KEYS[1])
";

const SET_TIMEOUT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if redis.call('HEXISTS', KEYS[1], 'ended') == 0 then
  redis.call('HSET', KEYS[1], 'timeout', ARGV[1])
  local created = tonumber(redis.call('HGET', KEYS[1], 'created'))
  local expire = math.floor(created / 1000) + tonumber(ARGV[1]) * 1000 + tonumber(ARGV[2])
  redis.call('PEXPIREAT', KEYS[1], expire)
  redis.call('PEXPIREAT', KEYS[2], expire)
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
return redis.call('HGETALL', KEYS[1])
";

const JOIN: &str = r"
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 then return 0 end
redis.call('SADD', KEYS[2], ARGV[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1
";

const LEAVE: &str = r"
redis.call('SREM', KEYS[1], ARGV[1])
return redis.call('SCARD', KEYS[1])
";

/// The scripts, loaded once per process (Redis reloads them after a restart on demand).
struct Scripts {
    create: Script,
    revoke: Script,
    end: Script,
    set_timeout: Script,
    join: Script,
    leave: Script,
}

/// Told how the auth cache fares, so the daemon can export it as metrics; this crate
/// names no metric and knows no exporter.
pub trait CacheObserver: Send + Sync + 'static {
    /// A proxy authentication read was answered from the cache (`true`) or by Redis.
    fn auth_read(&self, cached: bool);
    /// The invalidation channel was subscribed (`true`: the cache is on) or lost.
    fn subscribed(&self, up: bool);
}

/// Live sessions read recently, trusted only while invalidations are being received.
struct AuthCache {
    observer: Option<Arc<dyn CacheObserver>>,
    state: Mutex<CacheState>,
    /// Whether the invalidation channel is subscribed right now.
    subscribed: AtomicBool,
    /// Counts invalidations (under the lock), so that a read can tell which ones
    /// happened while it was asking Redis.
    generation: AtomicU64,
}

struct CacheState {
    entries: LruCache<SessionId, (Instant, SessionHeader)>,
    /// The latest invalidations, oldest first, with the generation each one made:
    /// `None` evicted everything. A read that raced one of these for its session is
    /// not cached; other sessions' changes do not stop it.
    recent: VecDeque<(u64, Option<SessionId>)>,
}

impl AuthCache {
    fn new(observer: Option<Arc<dyn CacheObserver>>) -> Self {
        AuthCache {
            observer,
            state: Mutex::new(CacheState {
                entries: LruCache::new(
                    NonZeroUsize::new(CACHE_ENTRIES).unwrap_or(NonZeroUsize::MIN),
                ),
                recent: VecDeque::with_capacity(RECENT_INVALIDATIONS),
            }),
            subscribed: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        // A cache has nothing a panic could leave inconsistent beyond a stale entry,
        // which the TTL bounds anyway.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, id: SessionId) -> Option<SessionHeader> {
        let found = self.lookup(id);
        if let Some(o) = &self.observer {
            o.auth_read(found.is_some());
        }
        found
    }

    fn lookup(&self, id: SessionId) -> Option<SessionHeader> {
        if !self.subscribed.load(Ordering::Acquire) {
            return None;
        }
        let mut state = self.lock();
        match state.entries.get(&id) {
            Some((at, h)) if at.elapsed() < CACHE_TTL => Some(h.clone()),
            Some(_) => {
                state.entries.pop(&id);
                None
            }
            None => None,
        }
    }

    /// Caches `h`, read from Redis when the generation was `generation`, if it is live
    /// and no invalidation of it (or of everything) has arrived since.
    fn offer(&self, h: &SessionHeader, generation: u64) {
        if h.revoked.is_some() || h.ended.is_some() || !self.subscribed.load(Ordering::Acquire) {
            return;
        }
        let mut state = self.lock();
        let now = self.generation.load(Ordering::Acquire);
        if now != generation {
            // Every invalidation since must still be listed, and none may concern `h`.
            let covered = state
                .recent
                .front()
                .is_some_and(|&(oldest, _)| oldest <= generation + 1);
            let raced = state
                .recent
                .iter()
                .any(|&(g, id)| g > generation && id.is_none_or(|id| id == h.id));
            if !covered || raced {
                return;
            }
        }
        state.entries.put(h.id, (Instant::now(), h.clone()));
    }

    /// Evicts one session, or every session (`None`).
    fn invalidate(&self, id: Option<SessionId>) {
        let mut state = self.lock();
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        if state.recent.len() == RECENT_INVALIDATIONS {
            state.recent.pop_front();
        }
        state.recent.push_back((generation, id));
        match id {
            Some(id) => {
                state.entries.pop(&id);
            }
            None => state.entries.clear(),
        }
    }

    fn set_subscribed(&self, subscribed: bool) {
        self.invalidate(None);
        self.subscribed.store(subscribed, Ordering::Release);
        if let Some(o) = &self.observer {
            o.subscribed(subscribed);
        }
    }
}

/// The shared session store of an HA pair.
pub struct RedisStorage {
    conn: ConnectionManager,
    prefix: String,
    /// How long a session's keys outlive its expiry or end: retention plus grace.
    kept_after_ms: u64,
    scripts: Scripts,
    cache: Arc<AuthCache>,
    subscriber: tokio::task::JoinHandle<()>,
}

fn backend(e: redis::RedisError) -> Error {
    Error::Backend(format!("redis: {e}"))
}

/// Whether a command failed because the connection broke, so that trying again after
/// the manager reconnects may succeed.
fn is_outage(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

impl RedisStorage {
    /// Connects and subscribes to the invalidation channel. Fails if Redis cannot be
    /// reached now; once connected, outages are survived.
    pub async fn connect(config: &RedisConfig) -> Result<Self> {
        Self::connect_with(config, None).await
    }

    /// [`RedisStorage::connect`], telling `observer` how the auth cache fares.
    pub async fn connect_with(
        config: &RedisConfig,
        observer: Option<Arc<dyn CacheObserver>>,
    ) -> Result<Self> {
        let client = redis::Client::open(config.url.as_str()).map_err(backend)?;
        // Few, quick reconnection attempts: a command waits for them, and while Redis
        // is down callers must hear so at once (503), not after seconds of backoff.
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(100));
        let conn = client
            .get_connection_manager_with_config(manager_config)
            .await
            .map_err(backend)?;
        let cache = Arc::new(AuthCache::new(observer));
        let channel = format!("{}invalidate", config.key_prefix);
        let subscriber = tokio::spawn(subscribe(client, channel, Arc::clone(&cache)));
        let store = RedisStorage {
            conn,
            prefix: config.key_prefix.clone(),
            kept_after_ms: u64::try_from((config.retention + KEY_GRACE).as_millis())
                .unwrap_or(u64::MAX),
            scripts: Scripts {
                create: Script::new(CREATE),
                revoke: Script::new(REVOKE),
                end: Script::new(END),
                set_timeout: Script::new(SET_TIMEOUT),
                join: Script::new(JOIN),
                leave: Script::new(LEAVE),
            },
            cache,
            subscriber,
        };
        let added = store.backfill_live().await?;
        if added > 0 {
            tracing::info!(
                sessions = added,
                "live sessions listed in the live set (created before it existed)"
            );
        }
        Ok(store)
    }

    fn session_key(&self, id: SessionId) -> String {
        format!("{}session:{id}", self.prefix)
    }

    fn nodes_key(&self, id: SessionId) -> String {
        format!("{}nodes:{id}", self.prefix)
    }

    fn sessions_key(&self) -> String {
        format!("{}sessions", self.prefix)
    }

    fn live_key(&self) -> String {
        format!("{}live", self.prefix)
    }

    /// The headers of the sessions whose ids the set `set` holds; ids whose hash has
    /// expired are dropped from the set.
    async fn members_headers(&self, set: &str) -> Result<Vec<(SessionId, SessionHeader)>> {
        let ids: Vec<String> = self
            .retry(|mut conn| {
                let set = set.to_owned();
                async move { conn.smembers(set).await }
            })
            .await?;
        let ids: Vec<SessionId> = ids.iter().filter_map(|s| s.parse().ok()).collect();
        let mut out = Vec::with_capacity(ids.len());
        let mut gone = Vec::new();
        for batch in ids.chunks(READ_BATCH) {
            let keys: Vec<String> = batch.iter().map(|id| self.session_key(*id)).collect();
            let all: Vec<HashMap<String, Vec<u8>>> = self
                .retry(|mut conn| {
                    let mut pipe = redis::pipe();
                    for k in &keys {
                        pipe.hgetall(k);
                    }
                    async move { pipe.query_async(&mut conn).await }
                })
                .await?;
            for (id, fields) in batch.iter().zip(all) {
                if fields.is_empty() {
                    gone.push(id.to_string());
                } else {
                    out.push((*id, header_from_fields(&fields)?));
                }
            }
        }
        if !gone.is_empty() {
            // Their hashes expired; the set's entry is all that is left of them.
            self.retry(|mut conn| {
                let (set, gone) = (set.to_owned(), gone.clone());
                async move { conn.srem::<_, _, ()>(set, gone).await }
            })
            .await?;
        }
        Ok(out)
    }

    /// Puts every session that has not ended into the live set: sessions created by a
    /// version without that set, or by one still running on the other node during an
    /// upgrade. Run once at start-up; returns how many it added.
    async fn backfill_live(&self) -> Result<usize> {
        let live: Vec<String> = self
            .members_headers(&self.sessions_key())
            .await?
            .into_iter()
            .filter(|(_, h)| h.ended.is_none())
            .map(|(id, _)| id.to_string())
            .collect();
        if live.is_empty() {
            return Ok(0);
        }
        let key = self.live_key();
        self.retry(|mut conn| {
            let (key, live) = (key.clone(), live.clone());
            async move { conn.sadd::<_, _, usize>(key, live).await }
        })
        .await
    }

    fn ended_key(&self) -> String {
        format!("{}ended", self.prefix)
    }

    fn channel(&self) -> String {
        format!("{}invalidate", self.prefix)
    }

    /// Runs an idempotent operation, again after a broken connection.
    async fn retry<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let mut delays = RETRY_DELAYS.iter();
        loop {
            match op(self.conn.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) if is_outage(&e) => match delays.next() {
                    Some(d) => tokio::time::sleep(*d).await,
                    None => return Err(backend(e)),
                },
                Err(e) => return Err(backend(e)),
            }
        }
    }

    /// The Unix time in milliseconds at which a live session's keys expire.
    fn live_expiry_ms(&self, h: &SessionHeader) -> u64 {
        let expires_ms = u64::try_from(h.expires_at().as_micros() / 1000).unwrap_or(0);
        expires_ms.saturating_add(self.kept_after_ms)
    }

    /// Evicts a session a script just changed. The script published the change for the
    /// other nodes; this node does not wait for its own message.
    fn changed(&self, h: &Option<SessionHeader>) {
        if let Some(h) = h {
            self.cache.invalidate(Some(h.id));
        }
    }

    /// Reads a session from Redis, offering it to the auth cache.
    async fn read(&self, id: SessionId) -> Result<Option<SessionHeader>> {
        let generation = self.cache.generation.load(Ordering::Acquire);
        let key = self.session_key(id);
        let fields: HashMap<String, Vec<u8>> = self
            .retry(|mut conn| {
                let key = key.clone();
                async move { conn.hgetall(key).await }
            })
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let h = header_from_fields(&fields)?;
        self.cache.offer(&h, generation);
        Ok(Some(h))
    }

    async fn run_update(
        &self,
        script: &Script,
        keys: &[String],
        args: &[String],
    ) -> Result<Option<SessionHeader>> {
        let fields: Option<HashMap<String, Vec<u8>>> = self
            .retry(|mut conn| {
                let mut invocation = script.prepare_invoke();
                for k in keys {
                    invocation.key(k);
                }
                for a in args {
                    invocation.arg(a);
                }
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        let h = fields.map(|f| header_from_fields(&f)).transpose()?;
        self.changed(&h);
        Ok(h)
    }
}

impl Drop for RedisStorage {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

/// Keeps the invalidation channel subscribed, evicting each session published on it;
/// the cache is off whenever the subscription is down. A connection that died without
/// a word (a killed server) is found by pinging it: a quiet channel proves nothing.
async fn subscribe(client: redis::Client, channel: String, cache: Arc<AuthCache>) {
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                Ok(()) => {
                    cache.set_subscribed(true);
                    listen(pubsub, &cache).await;
                    cache.set_subscribed(false);
                    tracing::warn!("redis invalidation channel lost; resubscribing");
                }
                Err(e) => tracing::warn!(error = %e, "cannot subscribe to redis invalidations"),
            },
            Err(e) => tracing::debug!(error = %e, "cannot connect to redis for invalidations"),
        }
        tokio::time::sleep(RESUBSCRIBE_DELAY).await;
    }
}

/// Applies invalidations until the subscription's connection fails.
async fn listen(pubsub: redis::aio::PubSub, cache: &AuthCache) {
    let (mut sink, mut messages) = pubsub.split();
    let mut liveness = tokio::time::interval(LIVENESS_INTERVAL);
    loop {
        tokio::select! {
            msg = messages.next() => {
                let Some(msg) = msg else { return };
                match std::str::from_utf8(msg.get_payload_bytes())
                    .ok()
                    .and_then(|s| s.parse::<SessionId>().ok())
                {
                    Some(id) => cache.invalidate(Some(id)),
                    // Someone else's message on our channel: trust nothing cached.
                    None => cache.set_subscribed(true),
                }
            }
            _ = liveness.tick() => {
                // Any reply will do: a subscribed RESP2 connection answers PING with an
                // array, not the usual status.
                let pong = tokio::time::timeout(COMMAND_TIMEOUT, sink.ping::<redis::Value>()).await;
                if !matches!(pong, Ok(Ok(_))) {
                    return;
                }
            }
        }
    }
}

fn field_i64(fields: &HashMap<String, Vec<u8>>, name: &str) -> Result<Option<i64>> {
    fields
        .get(name)
        .map(|v| {
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| Error::Corrupt(format!("session field {name} is not a number")))
        })
        .transpose()
}

/// Rebuilds a header from its hash: the header as created, with what changed since.
fn header_from_fields(fields: &HashMap<String, Vec<u8>>) -> Result<SessionHeader> {
    let bytes = fields
        .get("header")
        .ok_or_else(|| Error::Corrupt("session hash without a header".into()))?;
    let mut h = codec::decode_header(bytes)?;
    if let Some(t) = field_i64(fields, "timeout")? {
        h.timeout_secs =
            u64::try_from(t).map_err(|_| Error::Corrupt("negative session timeout".into()))?;
    }
    if let Some(at) = field_i64(fields, "revoked")? {
        h.revoked = Some(Timestamp::from_micros(at));
    }
    if let Some(at) = field_i64(fields, "ended")? {
        let reason = match fields.get("reason").map(Vec::as_slice) {
            Some(b"ended") => EndReason::Ended,
            Some(b"expired") => EndReason::Expired,
            _ => return Err(Error::Corrupt("session end without a known reason".into())),
        };
        h.ended = Some(Ended {
            at: Timestamp::from_micros(at),
            reason,
        });
    }
    Ok(h)
}

/// A value no other create call uses: this process's id, the time and a counter.
fn create_attempt() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        Timestamp::now().as_micros(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

const fn reason_name(r: EndReason) -> &'static str {
    match r {
        EndReason::Ended => "ended",
        EndReason::Expired => "expired",
    }
}

#[async_trait]
impl SessionStore for RedisStorage {
    async fn create(&self, header: &SessionHeader) -> Result<()> {
        let bytes = codec::encode_header(header)?;
        let keys = [
            self.session_key(header.id),
            self.sessions_key(),
            self.ended_key(),
            self.live_key(),
        ];
        let micros =
            |t: Option<Timestamp>| t.map(|t| t.as_micros().to_string()).unwrap_or_default();
        let expire_at = match header.ended {
            Some(e) => u64::try_from(e.at.as_micros() / 1000)
                .unwrap_or(0)
                .saturating_add(self.kept_after_ms),
            None => self.live_expiry_ms(header),
        };
        let args = [
            header.created.as_micros().to_string(),
            header.timeout_secs.to_string(),
            micros(header.revoked),
            micros(header.ended.map(|e| e.at)),
            header
                .ended
                .map(|e| reason_name(e.reason))
                .unwrap_or_default()
                .to_owned(),
            expire_at.to_string(),
            header.id.to_string(),
            // Tells a retry of this very call (whose first reply was lost) from a
            // second creation of the same id.
            create_attempt(),
        ];
        let created: i64 = self
            .retry(|mut conn| {
                let mut invocation = self.scripts.create.prepare_invoke();
                for k in &keys {
                    invocation.key(k);
                }
                invocation.arg(bytes.as_slice());
                for a in &args {
                    invocation.arg(a);
                }
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        if created == 1 {
            Ok(())
        } else {
            Err(Error::AlreadyExists(header.id.to_string()))
        }
    }

    async fn get(&self, id: SessionId) -> Result<Option<SessionHeader>> {
        self.read(id).await
    }

    async fn get_for_auth(&self, id: SessionId) -> Result<Option<SessionHeader>> {
        if let Some(h) = self.cache.get(id) {
            return Ok(Some(h));
        }
        self.read(id).await
    }

    async fn revoke(&self, id: SessionId, at: Timestamp) -> Result<Option<SessionHeader>> {
        self.run_update(
            &self.scripts.revoke,
            &[self.session_key(id)],
            &[at.as_micros().to_string(), self.channel(), id.to_string()],
        )
        .await
    }

    async fn end(
        &self,
        id: SessionId,
        at: Timestamp,
        reason: EndReason,
    ) -> Result<Option<SessionHeader>> {
        self.run_update(
            &self.scripts.end,
            &[
                self.session_key(id),
                self.ended_key(),
                self.nodes_key(id),
                self.live_key(),
            ],
            &[
                at.as_micros().to_string(),
                reason_name(reason).to_owned(),
                self.kept_after_ms.to_string(),
                self.channel(),
                id.to_string(),
            ],
        )
        .await
    }

    async fn set_timeout(&self, id: SessionId, timeout_secs: u64) -> Result<Option<SessionHeader>> {
        self.run_update(
            &self.scripts.set_timeout,
            &[self.session_key(id), self.nodes_key(id)],
            &[
                timeout_secs.to_string(),
                self.kept_after_ms.to_string(),
                self.channel(),
                id.to_string(),
            ],
        )
        .await
    }

    async fn list(&self) -> Result<Vec<SessionHeader>> {
        let headers = self.members_headers(&self.sessions_key()).await?;
        Ok(headers.into_iter().map(|(_, h)| h).collect())
    }

    async fn list_live(&self) -> Result<Vec<SessionHeader>> {
        let live_key = self.live_key();
        let headers = self.members_headers(&live_key).await?;
        let (live, ended): (Vec<_>, Vec<_>) =
            headers.into_iter().partition(|(_, h)| h.ended.is_none());
        if !ended.is_empty() {
            // Listed by a start-up backfill that raced their end: drop them now.
            let ended: Vec<String> = ended.iter().map(|(id, _)| id.to_string()).collect();
            self.retry(|mut conn| {
                let (key, ended) = (live_key.clone(), ended.clone());
                async move { conn.srem::<_, _, ()>(key, ended).await }
            })
            .await?;
        }
        Ok(live.into_iter().map(|(_, h)| h).collect())
    }

    async fn ended_before(&self, cutoff: Timestamp, limit: usize) -> Result<Vec<SessionId>> {
        let key = self.ended_key();
        let max = format!("({}", cutoff.as_micros());
        let count = isize::try_from(limit).unwrap_or(isize::MAX);
        let ids: Vec<String> = self
            .retry(|mut conn| {
                let (key, max) = (key.clone(), max.clone());
                async move { conn.zrangebyscore_limit(key, "-inf", max, 0, count).await }
            })
            .await?;
        ids.iter()
            .map(|s| {
                s.parse::<SessionId>()
                    .map_err(|_| Error::Corrupt(format!("retention queue entry {s:?}")))
            })
            .collect()
    }

    async fn retained(&self) -> Result<Retained> {
        let key = self.ended_key();
        let (count, oldest): (u64, Vec<(String, f64)>) = self
            .retry(|mut conn| {
                let mut pipe = redis::pipe();
                pipe.zcard(&key).zrange_withscores(&key, 0, 0);
                async move { pipe.query_async(&mut conn).await }
            })
            .await?;
        Ok(Retained {
            count,
            // Scores are end times in microseconds, exact in a double until 2255.
            oldest_end: oldest
                .first()
                .map(|(_, us)| Timestamp::from_micros(*us as i64)),
        })
    }

    async fn purge(&self, id: SessionId) -> Result<()> {
        let (session, nodes) = (self.session_key(id), self.nodes_key(id));
        let (ended, index, channel) = (self.ended_key(), self.sessions_key(), self.channel());
        let live = self.live_key();
        let member = id.to_string();
        self.retry(|mut conn| {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .del(&session)
                .ignore()
                .del(&nodes)
                .ignore()
                .zrem(&ended, &member)
                .ignore()
                .srem(&index, &member)
                .ignore()
                .srem(&live, &member)
                .ignore()
                .publish(&channel, &member)
                .ignore();
            async move { pipe.query_async::<()>(&mut conn).await }
        })
        .await?;
        self.cache.invalidate(Some(id));
        Ok(())
    }

    async fn check_health(&self) -> Result<()> {
        self.retry(|mut conn| async move { redis::cmd("PING").query_async::<()>(&mut conn).await })
            .await
    }
}

#[async_trait]
impl NodeSets for RedisStorage {
    async fn join(&self, id: SessionId, node: &NodeId) -> Result<()> {
        let keys = [self.session_key(id), self.nodes_key(id)];
        self.retry(|mut conn| {
            let mut invocation = self.scripts.join.prepare_invoke();
            invocation.key(&keys[0]).key(&keys[1]).arg(node.as_str());
            async move { invocation.invoke_async::<i64>(&mut conn).await }
        })
        .await
        .map(|_| ())
    }

    async fn leave(&self, id: SessionId, node: &NodeId) -> Result<usize> {
        let key = self.nodes_key(id);
        let left: i64 = self
            .retry(|mut conn| {
                let mut invocation = self.scripts.leave.prepare_invoke();
                invocation.key(&key).arg(node.as_str());
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        Ok(usize::try_from(left).unwrap_or(0))
    }

    async fn members(&self, id: SessionId) -> Result<Vec<NodeId>> {
        let key = self.nodes_key(id);
        let names: Vec<String> = self
            .retry(|mut conn| {
                let key = key.clone();
                async move { conn.smembers(key).await }
            })
            .await?;
        let mut nodes = names
            .iter()
            .map(|n| {
                n.parse::<NodeId>()
                    .map_err(|_| Error::Corrupt(format!("node set entry {n:?}")))
            })
            .collect::<Result<Vec<_>>>()?;
        nodes.sort_unstable();
        Ok(nodes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;

    fn live(n: u8) -> SessionHeader {
        SessionHeader::new(
            SessionId::from_bytes([n; 16]),
            [n; 32],
            Policy::Strict,
            Timestamp::now(),
            60,
        )
    }

    fn subscribed_cache() -> AuthCache {
        let cache = AuthCache::new(None);
        cache.set_subscribed(true);
        cache
    }

    fn generation(cache: &AuthCache) -> u64 {
        cache.generation.load(Ordering::Acquire)
    }

    #[test]
    fn a_read_is_cached_only_while_subscribed() {
        let (a, cache) = (live(1), AuthCache::new(None));
        cache.offer(&a, generation(&cache));
        assert!(cache.get(a.id).is_none(), "not subscribed yet");
        cache.set_subscribed(true);
        cache.offer(&a, generation(&cache));
        assert_eq!(cache.get(a.id).map(|h| h.id), Some(a.id));
        cache.set_subscribed(false);
        assert!(cache.get(a.id).is_none(), "subscription lost");
    }

    #[test]
    fn other_sessions_changes_during_a_read_do_not_stop_it_being_cached() {
        let (a, b, cache) = (live(1), live(2), subscribed_cache());
        let before = generation(&cache);
        for _ in 0..10 {
            cache.invalidate(Some(b.id));
        }
        cache.offer(&a, before);
        assert!(cache.get(a.id).is_some());
    }

    #[test]
    fn a_read_raced_by_its_own_sessions_invalidation_is_not_cached() {
        let (a, b, cache) = (live(1), live(2), subscribed_cache());
        let before = generation(&cache);
        cache.invalidate(Some(a.id));
        cache.invalidate(Some(b.id));
        cache.offer(&a, before);
        assert!(cache.get(a.id).is_none());
    }

    #[test]
    fn a_read_raced_by_a_resubscription_is_not_cached() {
        let (a, cache) = (live(1), subscribed_cache());
        let before = generation(&cache);
        cache.set_subscribed(true);
        cache.offer(&a, before);
        assert!(cache.get(a.id).is_none());
    }

    #[test]
    fn a_read_overtaken_by_more_invalidations_than_remembered_is_not_cached() {
        let (a, b, cache) = (live(1), live(2), subscribed_cache());
        let before = generation(&cache);
        for _ in 0..RECENT_INVALIDATIONS - 1 {
            cache.invalidate(Some(b.id));
        }
        cache.offer(&a, before);
        assert!(cache.get(a.id).is_some(), "all still remembered");
        cache.invalidate(Some(a.id));
        let before = generation(&cache);
        for _ in 0..=RECENT_INVALIDATIONS {
            cache.invalidate(Some(b.id));
        }
        cache.offer(&a, before);
        assert!(cache.get(a.id).is_none(), "some forgotten: not cached");
    }

    #[test]
    fn revoked_and_ended_sessions_are_never_cached() {
        let cache = subscribed_cache();
        let mut revoked = live(1);
        revoked.revoked = Some(Timestamp::now());
        cache.offer(&revoked, generation(&cache));
        assert!(cache.get(revoked.id).is_none());
        let mut ended = live(2);
        ended.ended = Some(Ended {
            at: Timestamp::now(),
            reason: EndReason::Ended,
        });
        cache.offer(&ended, generation(&cache));
        assert!(cache.get(ended.id).is_none());
    }
}
