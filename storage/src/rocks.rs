//! RocksDB backend: the embedded default for both stores, in one database.
//!
//! Column families (never one per session):
//! - `sessions`: `session_id` → [`SessionHeader`]
//! - `events`: `session_id ‖ seq (u64 BE)` → the [`AuditRecord`]s one group commit appended
//!   to the session, numbered from `seq` on: one record as itself, several as a
//!   [`codec::Chunk`] (a value per session and commit, not per record, is a fraction of
//!   the memtable inserts, and compresses better); the key `session_id ‖ u64::MAX` holds
//!   the session's [`LogState`] (next sequence number and counters), so a session is one
//!   prefix and deleting it is one range delete; values of [`EVENTS_MIN_BLOB`] bytes and
//!   more are kept in blob files
//! - `artifacts`: `sha256 ‖ session_id` → empty (who fetched this content)
//! - `artifact_names`: `name ‖ version ‖ type ‖ sha256 ‖ session_id` → empty, each string
//!   prefixed by its length (u16 BE): the name + version side of the artifact index
//! - `by_end_time`: `end_us (u64 BE) ‖ session_id` → empty (the retention queue)
//! - `unindexed`: `session_id ‖ seq (u64 BE)` → empty: the session's records from `seq`
//!   on have index entries that may still be only in memory (see below)
//!
//! Every write (appends, session changes, deletes) goes through one writer thread that
//! group-commits a `WriteBatch` with `sync = true`, so an acknowledged write survives
//! `kill -9` and power loss, and concurrent writers share each fsync. Being the only
//! writer, the thread also serialises each session's read-modify-write without a lock
//! held across the fsync. Nothing here blocks the async reactor: every RocksDB call
//! runs on the writer thread or in `spawn_blocking`.
//!
//! The index families are not written through the memtable: the writer keeps their new
//! entries in memory ([`index_tail`]), where queries see them too, and every
//! [`OpenOptions::index_tail_entries`] entries hands them to an ingest thread, which
//! writes them as one sorted file per family and ingests it. Inserted one at a time at
//! random places, they had cost more than the records. They are derived from the
//! records, so nothing acknowledged is lost with the memory: the first commit of a
//! session after a hand-over also lists the session in `unindexed`, a finished ingest
//! deletes what it covered from there, and opening the database indexes again the
//! records of every session still listed (after a crash; a clean shutdown ingests
//! first).
//!
//! A failed write (a full disk, an I/O error) stops RocksDB's writes for good, so the
//! writer then reopens the database, at most once a second, until writes succeed again;
//! meanwhile every write is refused with the failure and [`AuditLog::check_writable`]
//! reports it (so `/status` answers 503 and the proxy refuses new requests); each such
//! check also nudges the writer to try the reopen. Reopening replays the write-ahead
//! log: nothing acknowledged is lost.

mod index_tail;

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lru::LruCache;
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, Direction,
    IngestExternalFileOptions, IteratorMode, Options, ReadOptions, SliceTransform, SstFileWriter,
    WriteBatch, WriteOptions,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use self::index_tail::{Entries, IndexTail};
use crate::{
    AuditLog, AuditRecord, Counters, EndReason, Ended, Error, Result, Retained, SessionHeader,
    SessionId, SessionStore, Timestamp, codec,
};

const CF_SESSIONS: &str = "sessions";
const CF_EVENTS: &str = "events";
const CF_ARTIFACTS: &str = "artifacts";
const CF_ARTIFACT_NAMES: &str = "artifact_names";
const CF_BY_END_TIME: &str = "by_end_time";
const CF_UNINDEXED: &str = "unindexed";
/// Where index files are written before they are ingested (inside the database directory).
const INGEST_DIR: &str = "index-ingest";

/// Appends one writer batch may hold at most.
const MAX_BATCH: usize = 4096;
/// Default [`OpenOptions::max_wal_bytes`].
const MAX_WAL_BYTES: u64 = 256 << 20;
/// Dropped write-ahead log files kept for reuse.
const RECYCLED_WAL_FILES: usize = 4;
/// Appends that may wait for the writer before callers are slowed down.
const QUEUE_DEPTH: usize = 16 * 1024;
/// Session headers kept in memory.
const HEADER_CACHE: NonZeroUsize = NonZeroUsize::new(16 * 1024).unwrap();
/// The sequence number reserved for a session's [`LogState`].
const STATE_SEQ: u64 = u64::MAX;
/// Time between attempts to reopen the database after a failed write.
const REOPEN_INTERVAL: Duration = Duration::from_secs(1);
/// How long a reopen waits for reads in progress on the old database.
const READERS_GRACE: Duration = Duration::from_secs(5);
/// `events` values of at least this many bytes are kept in blob files.
const EVENTS_MIN_BLOB: u64 = 1024;
/// Index entries gathered in memory before they are ingested (48 bytes each for
/// `artifacts`, name keys a little longer; twice as many while an ingest runs), and at
/// most what opening after a crash re-indexes.
const INDEX_TAIL_ENTRIES: usize = 128 * 1024;

/// The next sequence number and record counts of one session's log.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct LogState {
    next_seq: u64,
    counters: Counters,
}

struct Shared {
    path: PathBuf,
    /// [`OpenOptions::max_wal_bytes`], for reopening.
    max_wal_bytes: u64,
    /// `None` while the database is being reopened after a failed write.
    db: RwLock<Option<Arc<DB>>>,
    /// Why the last write failed, until a write succeeds again.
    failure: Mutex<Option<String>>,
    /// Orders filling `headers` from the database against the writer's updates of it.
    session_lock: Mutex<()>,
    /// Recently used session headers, written through: the writer thread (the only
    /// writer; the database is locked to one process) updates it under `session_lock`
    /// after each commit, so a hit is never stale. It spares the proxy a blocking-pool
    /// round trip per request for the credentials check.
    headers: Mutex<LruCache<SessionId, SessionHeader>>,
    /// Every session that has not ended, read once at open and written through by the
    /// writer thread after each commit, like `headers`: listing them reads no table.
    live: Mutex<HashMap<SessionId, SessionHeader>>,
    /// How many entries the retention queue holds, counted once at open and kept by
    /// the writer thread.
    retained: AtomicU64,
    /// Index entries not ingested yet; only the writer thread changes it.
    tail: RwLock<IndexTail>,
}

/// The sessions that have not ended, and how many entries the retention queue holds.
/// A header that cannot be decoded is left out with a warning: the database still
/// opens, and reading that session reports the damage.
fn live_and_retained(db: &DB) -> Result<(HashMap<SessionId, SessionHeader>, u64)> {
    let mut live = HashMap::new();
    for item in db.iterator_cf(cf(db, CF_SESSIONS)?, IteratorMode::Start) {
        let (key, value) = item?;
        match codec::decode_header(&value) {
            Ok(h) if h.ended.is_none() => {
                live.insert(h.id, h);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(
                session = ?session_from_key(&key),
                error = %e,
                "a stored session header cannot be read; it is not listed among the live sessions"
            ),
        }
    }
    let mut retained = 0;
    for item in db.iterator_cf(cf(db, CF_BY_END_TIME)?, IteratorMode::Start) {
        item?;
        retained += 1;
    }
    Ok((live, retained))
}

/// A column family's handle.
fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a ColumnFamily> {
    db.cf_handle(name)
        .ok_or_else(|| Error::Backend(format!("column family {name} is missing")))
}

fn sync_write(db: &DB, batch: WriteBatch) -> Result<()> {
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    Ok(db.write_opt(batch, &opts)?)
}

/// The length of the `name ‖ version` part an `artifact_names` key starts with (each
/// prefixed by its u16 BE length): what a name query seeks by.
fn name_version_len(key: &[u8]) -> Option<usize> {
    let mut at = 0usize;
    for _ in 0..2 {
        let len = key.get(at..at + 2)?;
        at += 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
    }
    (at <= key.len()).then_some(at)
}

/// The `artifact_names` prefix extractor; RocksDB calls it from C++, so it must not
/// panic: a key without the prefix (never written; see [`has_name_version_prefix`]) is
/// its own prefix.
fn name_version_prefix(key: &[u8]) -> &[u8] {
    &key[..name_version_len(key).unwrap_or(key.len())]
}

fn has_name_version_prefix(key: &[u8]) -> bool {
    name_version_len(key).is_some()
}

/// The options every column family starts from.
fn base_options() -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_compression_type(DBCompressionType::Lz4);
    opts.set_keep_log_file_num(4);
    // One writer thread does every append: skip the machinery for concurrent
    // memtable inserts (and the spinning that waits for them).
    opts.set_allow_concurrent_memtable_write(false);
    opts.set_enable_write_thread_adaptive_yield(false);
    opts
}

/// The options of the `artifacts` family, and of the files ingested into it.
fn artifacts_options() -> Options {
    let mut opts = base_options();
    opts.set_prefix_extractor(SliceTransform::create_fixed_prefix(32));
    opts
}

/// The options of the `artifact_names` family, and of the files ingested into it.
fn names_options() -> Options {
    let mut opts = base_options();
    opts.set_prefix_extractor(SliceTransform::create(
        "fetchgate.name-version",
        name_version_prefix,
        Some(has_name_version_prefix),
    ));
    opts
}

/// Opens (or creates) the database with fetchgate's options.
fn open_db(path: &Path, max_wal_bytes: u64) -> Result<DB> {
    let mut db_opts = base_options();
    // A write-ahead log can be dropped only once every family with data in it has
    // flushed, and the small families (sessions, retention queue) seldom fill a
    // memtable: left alone, logs pile up to RocksDB's default bound (four times every
    // family's memtables, gigabytes here), all replayed after a crash. Past this size
    // the families holding the oldest log are flushed.
    db_opts.set_max_total_wal_size(max_wal_bytes);
    // Dropped logs are reused rather than deleted: a commit then overwrites a file
    // that already has its size, so its fdatasync writes no inode (2.9 % -> 0.6 % of
    // the daemon's CPU at 1 KiB c256, docs/performance.md).
    db_opts.set_recycle_log_file_num(RECYCLED_WAL_FILES);
    let mut events_opts = base_options();
    events_opts.set_prefix_extractor(SliceTransform::create_fixed_prefix(16));
    // Chunks (several records, so 1 KiB and more) go to blob files at flush, and
    // compaction then moves a reference instead of re-compressing the records at every
    // level: +8 % audit appends at 4,096 appenders (docs/performance.md). A session's
    // purge leaves its blobs as garbage, which blob GC reclaims in compaction.
    events_opts.set_enable_blob_files(true);
    events_opts.set_min_blob_size(EVENTS_MIN_BLOB);
    events_opts.set_blob_compression_type(DBCompressionType::Lz4);
    events_opts.set_blob_file_size(256 << 20);
    events_opts.set_enable_blob_gc(true);
    let cfs = vec![
        ColumnFamilyDescriptor::new(CF_SESSIONS, base_options()),
        ColumnFamilyDescriptor::new(CF_EVENTS, events_opts),
        ColumnFamilyDescriptor::new(CF_ARTIFACTS, artifacts_options()),
        ColumnFamilyDescriptor::new(CF_ARTIFACT_NAMES, names_options()),
        ColumnFamilyDescriptor::new(CF_BY_END_TIME, base_options()),
        ColumnFamilyDescriptor::new(CF_UNINDEXED, base_options()),
    ];
    DB::open_cf_descriptors(&db_opts, path, cfs).map_err(|e| {
        Error::Backend(format!(
            "cannot open database at {}: {}",
            path.display(),
            e.into_string()
        ))
    })
}

impl Shared {
    /// The open database (held only for the length of one operation).
    fn db(&self) -> Result<Arc<DB>> {
        self.db
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| match self.failed() {
                Some(f) => Error::Backend(format!(
                    "the database is closed after a failed write ({f}); reopening"
                )),
                None => Error::Backend("the database is being reopened".into()),
            })
    }

    fn failed(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_failure(&self, failure: Option<String>) {
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = failure;
    }

    /// Closes the database (once reads in progress let go of it) and opens it again,
    /// which replays its write-ahead log. Called by the writer thread only.
    fn reopen(&self) -> Result<()> {
        let old = self.db.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut old) = old {
            let deadline = Instant::now() + READERS_GRACE;
            loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(still_read) if Instant::now() < deadline => {
                        old = still_read;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(still_read) => {
                        *self.db.write().unwrap_or_else(|p| p.into_inner()) = Some(still_read);
                        return Err(Error::Backend(
                            "reads of the database did not finish; not reopened".into(),
                        ));
                    }
                }
            }
        }
        let db = open_db(&self.path, self.max_wal_bytes)?;
        *self.db.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(db));
        Ok(())
    }

    fn cached_header(&self, id: SessionId) -> Option<SessionHeader> {
        let mut cache = self.headers.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(&id).cloned()
    }

    /// Records a header just written or read; callers hold `session_lock`.
    fn cache_header(&self, header: &SessionHeader) {
        let mut cache = self.headers.lock().unwrap_or_else(|p| p.into_inner());
        cache.put(header.id, header.clone());
    }

    /// The header as stored: from the cache if there, else from the database.
    fn current_header(&self, id: SessionId) -> Result<Option<SessionHeader>> {
        match self.cached_header(id) {
            Some(h) => Ok(Some(h)),
            None => self.get_header(id),
        }
    }

    fn get_header(&self, id: SessionId) -> Result<Option<SessionHeader>> {
        let db = self.db()?;
        match db.get_pinned_cf(cf(&db, CF_SESSIONS)?, id.as_bytes())? {
            Some(bytes) => codec::decode_header(&bytes).map(Some),
            None => Ok(None),
        }
    }

    fn load_state(&self, session: SessionId) -> Result<LogState> {
        let db = self.db()?;
        match db.get_pinned_cf(cf(&db, CF_EVENTS)?, event_key(session, STATE_SEQ))? {
            Some(bytes) => codec::decode(&bytes),
            None => Ok(LogState::default()),
        }
    }

    /// Calls `f` with each encoded record of the session, in order.
    fn for_each_event(
        &self,
        session: SessionId,
        mut f: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        self.for_each_value(session, |value| codec::for_each_in_value(value, &mut f))
    }

    /// Calls `f` with each stored `events` value of the session (a record or a chunk).
    fn for_each_value(&self, session: SessionId, f: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        self.for_each_value_from(session, 0, f)
    }

    /// [`Shared::for_each_value`] from the value keyed `first_seq` on.
    fn for_each_value_from(
        &self,
        session: SessionId,
        first_seq: u64,
        mut f: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let prefix = session.as_bytes();
        let state_key = event_key(session, STATE_SEQ);
        let db = self.db()?;
        let from = event_key(session, first_seq);
        let mode = IteratorMode::From(&from, Direction::Forward);
        let mut opts = ReadOptions::default();
        opts.set_prefix_same_as_start(true);
        for item in db.iterator_cf_opt(cf(&db, CF_EVENTS)?, opts, mode) {
            let (key, value) = item?;
            if !key.starts_with(prefix) || *key == state_key[..] {
                break;
            }
            f(&value)?;
        }
        Ok(())
    }
}

fn event_key(session: SessionId, seq: u64) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(session.as_bytes());
    key[16..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn artifact_key(sha256: &[u8; 32], session: SessionId) -> [u8; 48] {
    let mut key = [0u8; 48];
    key[..32].copy_from_slice(sha256);
    key[32..].copy_from_slice(session.as_bytes());
    key
}

/// Appends `s` with its length (u16 BE); `None` if it is longer than that can say.
fn push_string(key: &mut Vec<u8>, s: &str) -> Option<()> {
    key.extend_from_slice(&u16::try_from(s.len()).ok()?.to_be_bytes());
    key.extend_from_slice(s.as_bytes());
    Some(())
}

/// The `artifact_names` key of `record`'s artifact in `session`; `None` for a record
/// without a named artifact, or with strings too long to index.
fn artifact_name_key(record: &AuditRecord, session: SessionId) -> Option<Vec<u8>> {
    let (name, version, kind, sha256) = record.artifact_name_parts()?;
    let mut key = Vec::with_capacity(6 + name.len() + version.len() + kind.len() + 48);
    push_string(&mut key, name)?;
    push_string(&mut key, version)?;
    push_string(&mut key, kind)?;
    key.extend_from_slice(&sha256);
    key.extend_from_slice(session.as_bytes());
    Some(key)
}

/// The (type, sha256, session) an `artifact_names` key ends with, after `prefix_len`
/// bytes of name and version.
fn split_name_key(key: &[u8], prefix_len: usize) -> Result<(Vec<u8>, [u8; 32], SessionId)> {
    let corrupt = || Error::Corrupt("malformed artifact name index key".into());
    let rest = key.get(prefix_len..).ok_or_else(corrupt)?;
    let (len, rest) = rest.split_at_checked(2).ok_or_else(corrupt)?;
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    let (kind, rest) = rest.split_at_checked(len).ok_or_else(corrupt)?;
    if rest.len() != 48 {
        return Err(corrupt());
    }
    let sha: [u8; 32] = rest[..32].try_into().map_err(|_| corrupt())?;
    Ok((kind.to_vec(), sha, session_from_key(&rest[32..])?))
}

fn end_time_key(at: Timestamp, session: SessionId) -> [u8; 24] {
    let mut key = [0u8; 24];
    // Times before the epoch do not occur; clamp rather than wrap.
    let us = u64::try_from(at.as_micros()).unwrap_or(0);
    key[..8].copy_from_slice(&us.to_be_bytes());
    key[8..].copy_from_slice(session.as_bytes());
    key
}

fn session_from_key(bytes: &[u8]) -> Result<SessionId> {
    let arr: [u8; 16] = bytes.try_into().map_err(|_| {
        Error::Corrupt(format!(
            "key part of {} bytes is not a session id",
            bytes.len()
        ))
    })?;
    Ok(SessionId::from_bytes(arr))
}

enum WriterMsg {
    Append {
        session: SessionId,
        bytes: Vec<u8>,
        sha256: Option<[u8; 32]>,
        /// Built by the appender, off the writer thread.
        name_key: Option<Vec<u8>>,
        delta: Counters,
        reply: oneshot::Sender<Result<u64>>,
    },
    Delete {
        session: SessionId,
        reply: oneshot::Sender<Result<()>>,
    },
    Session {
        id: SessionId,
        change: SessionChange,
        reply: SessionReply,
    },
    /// After a failed write: reopen the database if it is time to try again.
    Recover,
}

/// Where the writer sends the header a session change left (`None`: no such session).
type SessionReply = oneshot::Sender<Result<Option<SessionHeader>>>;

/// A change to one session's header, made by the writer thread.
enum SessionChange {
    Create(Box<SessionHeader>),
    Revoke(Timestamp),
    End(Timestamp, EndReason),
    SetTimeout(u64),
    Purge,
}

/// Told what the audit writer does, so the daemon can export it as metrics; this crate
/// names no metric and knows no exporter.
pub trait WriterObserver: Send + Sync + 'static {
    /// A group commit wrote `records` appends durably in `elapsed`.
    fn committed(&self, records: usize, elapsed: Duration);
    /// `queued` appends are waiting for the writer (sampled before each batch).
    fn queue_depth(&self, queued: usize);
    /// `entries` artifact index entries went from memory to the database in `elapsed`.
    fn ingested(&self, entries: usize, elapsed: Duration);
}

/// Both stores in one RocksDB database.
pub struct RocksStorage {
    shared: Arc<Shared>,
    writer: Option<mpsc::Sender<WriterMsg>>,
    writer_thread: Option<JoinHandle<()>>,
}

/// How [`RocksStorage::open_with`] opens the database.
#[derive(Clone)]
pub struct OpenOptions {
    /// Told what the audit writer does.
    pub observer: Option<Arc<dyn WriterObserver>>,
    /// Artifact index entries kept in memory (and searched there) before they are
    /// written to the database as one sorted file per index family.
    pub index_tail_entries: usize,
    /// Write-ahead log kept before the families holding its oldest file are flushed:
    /// at most about this much is replayed when the database opens after a crash.
    pub max_wal_bytes: u64,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            observer: None,
            index_tail_entries: INDEX_TAIL_ENTRIES,
            max_wal_bytes: MAX_WAL_BYTES,
        }
    }
}

impl RocksStorage {
    /// Opens (creating if needed) the database at `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, OpenOptions::default())
    }

    /// [`RocksStorage::open`] with the given options.
    pub fn open_with(path: &Path, options: OpenOptions) -> Result<Self> {
        let db = open_db(path, options.max_wal_bytes)?;
        let (live, retained) = live_and_retained(&db)?;
        let shared = Arc::new(Shared {
            path: path.to_owned(),
            max_wal_bytes: options.max_wal_bytes,
            db: RwLock::new(Some(Arc::new(db))),
            failure: Mutex::new(None),
            session_lock: Mutex::new(()),
            headers: Mutex::new(LruCache::new(HEADER_CACHE)),
            live: Mutex::new(live),
            retained: AtomicU64::new(retained),
            tail: RwLock::new(IndexTail::default()),
        });
        let unindexed = reindex_after_crash(&shared)?;
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let thread_shared = Arc::clone(&shared);
        let writer_thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                let mut writer = Writer::new(&thread_shared, &options, unindexed);
                writer.run(rx);
            })
            .map_err(|e| Error::Backend(format!("cannot start the audit writer thread: {e}")))?;
        Ok(RocksStorage {
            shared,
            writer: Some(tx),
            writer_thread: Some(writer_thread),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || f(&shared))
            .await
            .map_err(|e| Error::Backend(format!("storage task failed: {e}")))?
    }

    async fn change_session(
        &self,
        id: SessionId,
        change: SessionChange,
    ) -> Result<Option<SessionHeader>> {
        let (reply, rx) = oneshot::channel();
        self.to_writer(WriterMsg::Session { id, change, reply }, rx)
            .await
    }

    async fn to_writer<T>(&self, msg: WriterMsg, rx: oneshot::Receiver<Result<T>>) -> Result<T> {
        let stopped = || Error::Backend("the audit writer has stopped".into());
        let writer = self.writer.as_ref().ok_or_else(stopped)?;
        writer.send(msg).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

impl Drop for RocksStorage {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish what it holds and exit; joining it
        // releases the database (and its lock file) before we return.
        self.writer.take();
        if let Some(thread) = self.writer_thread.take() {
            let _ = thread.join();
        }
    }
}

/// The `unindexed` key saying that `session`'s records from `seq` on may have index
/// entries only in memory.
fn unindexed_key(session: SessionId, seq: u64) -> [u8; 24] {
    event_key(session, seq)
}

/// What [`reindex_after_crash`] found listed in `unindexed`.
#[derive(Default)]
struct Unindexed {
    /// Each listed session and the first of its records to index again.
    first: HashMap<SessionId, u64>,
    /// Every key read, deleted once the rebuilt entries are ingested.
    keys: Vec<[u8; 24]>,
}

/// Reads the sessions listed in `unindexed` (index entries that were only in memory
/// when the previous process stopped without ingesting them) and puts the index
/// entries of their records from there on back in the tail.
fn reindex_after_crash(shared: &Shared) -> Result<Unindexed> {
    let db = shared.db()?;
    let mut found = Unindexed::default();
    for item in db.iterator_cf(cf(&db, CF_UNINDEXED)?, IteratorMode::Start) {
        let (key, _) = item?;
        let key: [u8; 24] = (*key)
            .try_into()
            .map_err(|_| Error::Corrupt("unindexed key is not 24 bytes".into()))?;
        let session = session_from_key(&key[..16])?;
        let seq = u64::from_be_bytes(key[16..].try_into().unwrap_or_default());
        let first = found.first.entry(session).or_insert(seq);
        *first = (*first).min(seq);
        found.keys.push(key);
    }
    if found.keys.is_empty() {
        return Ok(found);
    }
    let started = Instant::now();
    let (mut artifacts, mut names, mut records) = (Vec::new(), Vec::new(), 0usize);
    for (&session, &first) in &found.first {
        shared.for_each_value_from(session, first, |value| {
            codec::for_each_in_value(value, |bytes| {
                let record: AuditRecord = codec::decode(bytes)?;
                records += 1;
                artifacts.extend(
                    record
                        .artifact_sha256()
                        .map(|sha| artifact_key(&sha, session)),
                );
                names.extend(artifact_name_key(&record, session));
                Ok(())
            })
        })?;
    }
    artifacts.sort_unstable();
    names.sort_unstable();
    tracing::info!(
        sessions = found.first.len(),
        records,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "artifact index entries not written out before the last stop were rebuilt from the audit log"
    );
    shared
        .tail
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .active
        .push(artifacts, names);
    Ok(found)
}

/// An ingest under way on its own thread; it answers how many entries it wrote, and in
/// how long.
struct Ingest {
    thread: JoinHandle<Result<(usize, Duration)>>,
    /// The `unindexed` keys it makes obsolete.
    markers: Vec<[u8; 24]>,
}

/// Writes `entries` as one sorted file per index family and ingests them.
fn ingest_entries(db: &DB, dir: &Path, entries: &Entries) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Backend(format!("cannot create {}: {e}", dir.display())))?;
    let artifacts = entries.artifacts.sorted();
    ingest_sorted(db, CF_ARTIFACTS, &artifacts_options(), dir, &artifacts)?;
    let names = entries.names.sorted();
    ingest_sorted(db, CF_ARTIFACT_NAMES, &names_options(), dir, &names)
}

/// The audit writer's state between group commits: the log state of every session it
/// has seen, and the appends staged for the next commit.
struct Writer<'a> {
    shared: &'a Shared,
    observer: Option<Arc<dyn WriterObserver>>,
    /// When the active index tail reaches this many entries, it is ingested.
    index_tail_entries: usize,
    /// The sessions with records whose index entries are in the active tail (as listed
    /// in `unindexed`), and the sequence number of the first such record.
    unindexed: HashMap<SessionId, u64>,
    /// More `unindexed` keys the next ingest covers (read at open, or left by a failed
    /// ingest).
    stale_markers: Vec<[u8; 24]>,
    /// The sessions the staged commit adds to `unindexed`.
    staged_unindexed: HashMap<SessionId, u64>,
    /// The ingest under way, if any.
    ingest: Option<Ingest>,
    /// Log states (next sequence number, counters) of the sessions appended to since
    /// the database was opened, until they end; every other one is read from disk when
    /// needed.
    states: HashMap<SessionId, LogState>,
    /// The records staged per session: the sequence number of the first, and the chunk.
    /// The sessions in it are those the commit writes a new log state for.
    events: BTreeMap<SessionId, (u64, codec::Chunk)>,
    /// Staged `artifacts` index keys.
    artifacts: Vec<[u8; 48]>,
    /// Staged `artifact_names` index keys.
    names: Vec<Vec<u8>>,
    pending: Vec<(oneshot::Sender<Result<u64>>, SessionId, u64)>,
    /// Session headers changed by the staged commit (`None`: purged), newest state.
    headers: HashMap<SessionId, Option<SessionHeader>>,
    /// Staged `by_end_time` entries: (key, whether it is deleted rather than put).
    end_times: Vec<([u8; 24], bool)>,
    /// Answers to session changes, sent once the commit is durable.
    session_replies: Vec<(SessionReply, Option<SessionHeader>)>,
    /// After a failed write: not before this instant is the database reopened.
    reopen_after: Instant,
}

impl<'a> Writer<'a> {
    fn new(shared: &'a Shared, options: &OpenOptions, unindexed: Unindexed) -> Self {
        Writer {
            shared,
            observer: options.observer.clone(),
            index_tail_entries: options.index_tail_entries.max(1),
            unindexed: unindexed.first,
            stale_markers: unindexed.keys,
            staged_unindexed: HashMap::new(),
            ingest: None,
            states: HashMap::new(),
            events: BTreeMap::new(),
            artifacts: Vec::with_capacity(MAX_BATCH),
            names: Vec::new(),
            pending: Vec::with_capacity(MAX_BATCH),
            headers: HashMap::new(),
            end_times: Vec::new(),
            session_replies: Vec::new(),
            reopen_after: Instant::now(),
        }
    }

    /// Serves the writer's channel until it closes, then ingests the index tail so that
    /// the next start has nothing to rebuild.
    fn run(&mut self, mut rx: mpsc::Receiver<WriterMsg>) {
        let mut msgs = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = rx.blocking_recv() {
            if let Some(o) = &self.observer {
                o.queue_depth(rx.len() + 1);
            }
            msgs.push(first);
            while msgs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => msgs.push(m),
                    Err(_) => break,
                }
            }
            for msg in msgs.drain(..) {
                match msg {
                    WriterMsg::Append {
                        session,
                        bytes,
                        sha256,
                        name_key,
                        delta,
                        reply,
                    } => self.stage(session, bytes, sha256, name_key, delta, reply),
                    WriterMsg::Session { id, change, reply } => {
                        self.stage_session(id, change, reply)
                    }
                    WriterMsg::Recover => {
                        let _ = self.writable();
                    }
                    WriterMsg::Delete { session, reply } => {
                        // A delete sees every append queued before it.
                        self.commit();
                        let _ = reply.send(self.delete(session));
                    }
                }
            }
            self.commit();
            self.finish_ingest(false);
            if self.active_tail_len() >= self.index_tail_entries {
                self.start_ingest();
            }
        }
        self.finish_ingest(true);
        if self.active_tail_len() > 0
            || !self.unindexed.is_empty()
            || !self.stale_markers.is_empty()
        {
            self.start_ingest();
            self.finish_ingest(true);
        }
    }

    fn active_tail_len(&self) -> usize {
        self.shared
            .tail
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .active
            .len()
    }

    /// Freezes the active index tail and hands it to an ingest thread, unless one is
    /// under way or writes are refused.
    fn start_ingest(&mut self) {
        if self.ingest.is_some() {
            return;
        }
        let Ok(db) = self.writable() else {
            return;
        };
        let Some(frozen) = self
            .shared
            .tail
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .freeze()
        else {
            return;
        };
        let mut markers = std::mem::take(&mut self.stale_markers);
        markers.extend(self.unindexed.drain().map(|(s, seq)| unindexed_key(s, seq)));
        let dir = self.shared.path.join(INGEST_DIR);
        let spawned = std::thread::Builder::new()
            .name("index-ingest".into())
            .spawn(move || {
                let started = Instant::now();
                ingest_entries(&db, &dir, &frozen)?;
                Ok((frozen.len(), started.elapsed()))
            });
        match spawned {
            Ok(thread) => self.ingest = Some(Ingest { thread, markers }),
            Err(e) => {
                let e = Error::Backend(format!("cannot start an index ingest thread: {e}"));
                self.ingest_failed(&e, markers);
            }
        }
    }

    /// Collects the ingest under way if it has finished (or, with `wait`, once it has):
    /// its entries leave the tail and its `unindexed` keys are deleted. A failed ingest
    /// is a failed write: writes are refused until the database is reopened, and its
    /// entries go back to the active tail for the next try.
    fn finish_ingest(&mut self, wait: bool) {
        let Some(ingest) = self.ingest.take_if(|i| wait || i.thread.is_finished()) else {
            return;
        };
        let ingested = ingest
            .thread
            .join()
            .unwrap_or_else(|_| Err(Error::Backend("the index ingest thread panicked".into())));
        let done = ingested.and_then(|(entries, elapsed)| {
            tracing::debug!(
                entries,
                elapsed_ms = elapsed.as_millis() as u64,
                "artifact index entries ingested"
            );
            if let Some(o) = &self.observer {
                o.ingested(entries, elapsed);
            }
            // The database has the entries now: the tail may drop them.
            self.shared
                .tail
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .frozen = None;
            let db = self.shared.db()?;
            let unindexed = cf(&db, CF_UNINDEXED)?;
            let mut batch = WriteBatch::default();
            for key in &ingest.markers {
                batch.delete_cf(unindexed, key);
            }
            sync_write(&db, batch)
        });
        if let Err(e) = done {
            self.ingest_failed(&e, ingest.markers);
        }
    }

    fn ingest_failed(&mut self, e: &Error, markers: Vec<[u8; 24]>) {
        self.write_failed(e);
        self.shared
            .tail
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .thaw();
        self.stale_markers.extend(markers);
    }

    /// Deletes a session's records and index entries: first from the database, then
    /// from the tail, once no ingest is under way that could bring them back.
    fn delete(&mut self, session: SessionId) -> Result<()> {
        self.states.remove(&session);
        self.finish_ingest(true);
        let db = self.writable()?;
        delete_session(self.shared, &db, session)?;
        self.shared
            .tail
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .active
            .remove_session(session.as_bytes());
        self.unindexed.remove(&session);
        self.stale_markers
            .retain(|key| !key.starts_with(session.as_bytes()));
        Ok(())
    }

    /// After a failed write: refuse writes until the database is reopened.
    fn write_failed(&mut self, e: &Error) {
        tracing::error!(error = %e, "a storage write failed; writes are refused until the database is reopened");
        self.shared.set_failure(Some(e.to_string()));
        self.reopen_after = Instant::now() + REOPEN_INTERVAL;
    }

    /// The database to write to. After a failed write it is reopened first, at most
    /// once per [`REOPEN_INTERVAL`]; until that succeeds, writes are refused with the
    /// failure.
    fn writable(&mut self) -> Result<Arc<DB>> {
        let Some(failure) = self.shared.failed() else {
            return self.shared.db();
        };
        let refused = |why: String| {
            Error::Backend(format!(
                "writes are refused after a failed write ({failure}){why}"
            ))
        };
        if Instant::now() < self.reopen_after {
            return Err(refused(String::new()));
        }
        self.reopen_after = Instant::now() + REOPEN_INTERVAL;
        match self.shared.reopen() {
            Ok(()) => {
                tracing::info!(previous_failure = %failure, "database reopened after a failed write; writes resume");
                self.shared.set_failure(None);
                // The log states in memory are still right: those of the appends a
                // failed write refused were dropped then, and are read again.
                self.shared.db()
            }
            Err(e) => {
                tracing::warn!(error = %e, "database not reopened yet");
                Err(refused(format!("; reopening: {e}")))
            }
        }
    }

    /// Applies a session change on top of the staged state and stages the result; the
    /// answer waits for the commit. A change that cannot apply is answered at once.
    fn stage_session(&mut self, id: SessionId, change: SessionChange, reply: SessionReply) {
        let current = match self.headers.get(&id) {
            Some(staged) => Ok(staged.clone()),
            None => self.shared.current_header(id),
        };
        let current = match current {
            Ok(c) => c,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let (answer, changed) = match (change, current) {
            (SessionChange::Create(header), None) => (Some(*header), true),
            (SessionChange::Create(_), Some(_)) => {
                let _ = reply.send(Err(Error::AlreadyExists(id.to_string())));
                return;
            }
            (SessionChange::Purge, current) => {
                if let Some(Ended { at, .. }) = current.and_then(|h| h.ended) {
                    self.end_times.push((end_time_key(at, id), true));
                }
                self.headers.insert(id, None);
                self.session_replies.push((reply, None));
                return;
            }
            (_, None) => (None, false),
            (SessionChange::Revoke(at), Some(mut h)) => {
                let changed = h.revoked.is_none();
                h.revoked.get_or_insert(at);
                (Some(h), changed)
            }
            (SessionChange::End(at, reason), Some(mut h)) => {
                let changed = h.ended.is_none();
                if changed {
                    h.revoked.get_or_insert(at);
                    h.ended = Some(Ended { at, reason });
                    self.end_times.push((end_time_key(at, id), false));
                }
                (Some(h), changed)
            }
            (SessionChange::SetTimeout(secs), Some(mut h)) => {
                let changed = h.ended.is_none() && h.timeout_secs != secs;
                if changed {
                    h.timeout_secs = secs;
                }
                (Some(h), changed)
            }
        };
        if changed {
            self.headers.insert(id, answer.clone());
        }
        self.session_replies.push((reply, answer));
    }

    /// Gives the record its sequence number and stages it; answers the appender at once
    /// if that fails.
    fn stage(
        &mut self,
        session: SessionId,
        bytes: Vec<u8>,
        sha256: Option<[u8; 32]>,
        name_key: Option<Vec<u8>>,
        delta: Counters,
        reply: oneshot::Sender<Result<u64>>,
    ) {
        let state = match self.states.get_mut(&session) {
            Some(s) => s,
            None => match self.shared.load_state(session) {
                Ok(loaded) => self.states.entry(session).or_insert(loaded),
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            },
        };
        let seq = state.next_seq;
        if seq == STATE_SEQ {
            let _ = reply.send(Err(Error::Backend(format!(
                "session {session} has no sequence numbers left"
            ))));
            return;
        }
        let (_, chunk) = self
            .events
            .entry(session)
            .or_insert_with(|| (seq, Default::default()));
        if let Err(e) = chunk.push(&bytes) {
            let _ = reply.send(Err(e));
            return;
        }
        state.next_seq += 1;
        if !self.unindexed.contains_key(&session) {
            self.staged_unindexed.entry(session).or_insert(seq);
        }
        state.counters.downloads += delta.downloads;
        state.counters.denied += delta.denied;
        if let Some(sha) = sha256 {
            self.artifacts.push(artifact_key(&sha, session));
        }
        self.names.extend(name_key);
        self.pending.push((reply, session, seq));
    }

    /// Writes the staged appends, with the log state of every session they touched, in
    /// one synchronous batch, puts their index entries in the tail and answers the
    /// appenders.
    ///
    /// Entries go into the batch in key order (each session's records, then its log
    /// state, session after session): RocksDB's skip-list memtable remembers
    /// where its last insert landed, so sorted inserts each take a few comparisons
    /// instead of a full search from the top.
    fn commit(&mut self) {
        if self.pending.is_empty() && self.session_replies.is_empty() {
            return;
        }
        let started = Instant::now();
        let written = self.writable().and_then(|db| {
            let mut batch = WriteBatch::default();
            if !self.headers.is_empty() {
                let sessions = cf(&db, CF_SESSIONS)?;
                for (id, header) in &self.headers {
                    match header {
                        Some(h) => batch.put_cf(sessions, id.as_bytes(), codec::encode_header(h)?),
                        None => batch.delete_cf(sessions, id.as_bytes()),
                    }
                }
                let by_end_time = cf(&db, CF_BY_END_TIME)?;
                for (key, deleted) in &self.end_times {
                    if *deleted {
                        batch.delete_cf(by_end_time, key);
                    } else {
                        batch.put_cf(by_end_time, key, []);
                    }
                }
            }
            let events = cf(&db, CF_EVENTS)?;
            for (&session, (first_seq, chunk)) in &self.events {
                batch.put_cf(events, event_key(session, *first_seq), chunk.value());
                let state = self.states.get(&session).copied().unwrap_or_default();
                batch.put_cf(
                    events,
                    event_key(session, STATE_SEQ),
                    codec::encode(&state)?,
                );
            }
            if !self.staged_unindexed.is_empty() {
                let unindexed = cf(&db, CF_UNINDEXED)?;
                for (&session, &first_seq) in &self.staged_unindexed {
                    batch.put_cf(unindexed, unindexed_key(session, first_seq), []);
                }
            }
            if batch.is_empty() {
                return Ok(());
            }
            sync_write(&db, batch).inspect_err(|e| self.write_failed(e))
        });
        self.events.clear();
        let queued = self
            .end_times
            .iter()
            .filter(|(_, deleted)| !deleted)
            .count() as u64;
        let dequeued = self.end_times.len() as u64 - queued;
        self.end_times.clear();
        let mut artifacts = std::mem::replace(&mut self.artifacts, Vec::with_capacity(MAX_BATCH));
        let mut names = std::mem::take(&mut self.names);
        let staged_unindexed = std::mem::take(&mut self.staged_unindexed);
        match written {
            Ok(()) => {
                if !artifacts.is_empty() || !names.is_empty() {
                    artifacts.sort_unstable();
                    names.sort_unstable();
                    self.shared
                        .tail
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .active
                        .push(artifacts, names);
                }
                self.unindexed.extend(staged_unindexed);
                if !self.headers.is_empty() {
                    let _guard = self
                        .shared
                        .session_lock
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    let mut cache = self
                        .shared
                        .headers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    let mut live = self.shared.live.lock().unwrap_or_else(|p| p.into_inner());
                    for (id, header) in self.headers.drain() {
                        match header {
                            Some(h) => {
                                if h.ended.is_none() {
                                    live.insert(id, h.clone());
                                } else {
                                    live.remove(&id);
                                    // Its log state is on disk now, and an ended session
                                    // seldom gets another record (a download that was
                                    // in flight): the next one reloads it.
                                    self.states.remove(&id);
                                }
                                cache.put(id, h)
                            }
                            None => {
                                live.remove(&id);
                                cache.pop(&id)
                            }
                        };
                    }
                    let retained = &self.shared.retained;
                    let now = retained.load(Ordering::Relaxed);
                    retained.store((now + queued).saturating_sub(dequeued), Ordering::Relaxed);
                }
                if let Some(o) = &self.observer {
                    o.committed(self.pending.len(), started.elapsed());
                }
                for (reply, _, seq) in self.pending.drain(..) {
                    let _ = reply.send(Ok(seq));
                }
                for (reply, answer) in self.session_replies.drain(..) {
                    let _ = reply.send(Ok(answer));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "storage write failed; {} appends and {} session changes refused", self.pending.len(), self.session_replies.len());
                self.headers.clear();
                for (reply, session, _) in self.pending.drain(..) {
                    // The in-memory sequence numbers ran ahead of the disk: reload them.
                    self.states.remove(&session);
                    let _ = reply.send(Err(Error::Backend(e.to_string())));
                }
                for (reply, _) in self.session_replies.drain(..) {
                    let _ = reply.send(Err(Error::Backend(e.to_string())));
                }
            }
        }
    }
}

/// Writes `keys` (sorted, without duplicates) as one file with empty values and
/// ingests it into `family`, whose options are `opts`.
fn ingest_sorted<K: AsRef<[u8]>>(
    db: &DB,
    family: &str,
    opts: &Options,
    dir: &Path,
    keys: &[K],
) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let path = dir.join(format!("{family}.sst"));
    // Ingesting moves the file by hard-linking it into the database, then unlinks this
    // name. A kill between the two leaves this name linked to a live table file, and
    // writing it again would rewrite that table in place: unlink it first.
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::Backend(format!(
                "cannot remove {}: {e}",
                path.display()
            )));
        }
        _ => {}
    }
    let writer = SstFileWriter::create(opts);
    writer.open(&path)?;
    let mut writer = writer;
    for key in keys {
        writer.put(key, [])?;
    }
    writer.finish()?;
    let mut ingest = IngestExternalFileOptions::default();
    ingest.set_move_files(true);
    db.ingest_external_file_cf_opts(cf(db, family)?, &ingest, vec![path])?;
    Ok(())
}

fn delete_session(shared: &Shared, db: &DB, session: SessionId) -> Result<()> {
    let mut shas = Vec::new();
    let mut names = Vec::new();
    shared.for_each_value(session, |value| {
        let read = codec::for_each_in_value(value, |bytes| {
            match codec::decode::<AuditRecord>(bytes) {
                Ok(record) => {
                    shas.extend(record.artifact_sha256());
                    names.extend(artifact_name_key(&record, session));
                }
                Err(e) => {
                    tracing::warn!(%session, error = %e, "unreadable record skipped while deleting")
                }
            }
            Ok(())
        });
        if let Err(e) = read {
            tracing::warn!(%session, error = %e, "unreadable chunk skipped while deleting");
        }
        Ok(())
    })?;
    let mut batch = WriteBatch::default();
    let events = cf(db, CF_EVENTS)?;
    batch.delete_range_cf(events, event_key(session, 0), event_key(session, STATE_SEQ));
    batch.delete_cf(events, event_key(session, STATE_SEQ));
    let artifacts = cf(db, CF_ARTIFACTS)?;
    for sha in shas {
        batch.delete_cf(artifacts, artifact_key(&sha, session));
    }
    let artifact_names = cf(db, CF_ARTIFACT_NAMES)?;
    for key in names {
        batch.delete_cf(artifact_names, key);
    }
    let unindexed = cf(db, CF_UNINDEXED)?;
    batch.delete_range_cf(
        unindexed,
        unindexed_key(session, 0),
        unindexed_key(session, u64::MAX),
    );
    batch.delete_cf(unindexed, unindexed_key(session, u64::MAX));
    sync_write(db, batch)
}

#[async_trait]
impl SessionStore for RocksStorage {
    async fn create(&self, header: &SessionHeader) -> Result<()> {
        let change = SessionChange::Create(Box::new(header.clone()));
        self.change_session(header.id, change).await.map(drop)
    }

    async fn get(&self, id: SessionId) -> Result<Option<SessionHeader>> {
        if let Some(header) = self.shared.cached_header(id) {
            return Ok(Some(header));
        }
        self.blocking(move |s| {
            // Under the lock, so this read cannot overwrite a newer header the writer
            // caches after its commit.
            let _guard = s.session_lock.lock().unwrap_or_else(|p| p.into_inner());
            let header = s.get_header(id)?;
            if let Some(h) = &header {
                s.cache_header(h);
            }
            Ok(header)
        })
        .await
    }

    async fn revoke(&self, id: SessionId, at: Timestamp) -> Result<Option<SessionHeader>> {
        self.change_session(id, SessionChange::Revoke(at)).await
    }

    async fn end(
        &self,
        id: SessionId,
        at: Timestamp,
        reason: EndReason,
    ) -> Result<Option<SessionHeader>> {
        self.change_session(id, SessionChange::End(at, reason))
            .await
    }

    async fn set_timeout(&self, id: SessionId, timeout_secs: u64) -> Result<Option<SessionHeader>> {
        self.change_session(id, SessionChange::SetTimeout(timeout_secs))
            .await
    }

    async fn list(&self) -> Result<Vec<SessionHeader>> {
        self.blocking(|s| {
            let db = s.db()?;
            db.iterator_cf(cf(&db, CF_SESSIONS)?, IteratorMode::Start)
                .map(|item| codec::decode_header(&item?.1))
                .collect()
        })
        .await
    }

    async fn list_live(&self) -> Result<Vec<SessionHeader>> {
        let live = self.shared.live.lock().unwrap_or_else(|p| p.into_inner());
        Ok(live.values().cloned().collect())
    }

    async fn ended_before(&self, cutoff: Timestamp, limit: usize) -> Result<Vec<SessionId>> {
        self.blocking(move |s| {
            let cutoff = u64::try_from(cutoff.as_micros()).unwrap_or(0);
            let mut out = Vec::new();
            let db = s.db()?;
            for item in db.iterator_cf(cf(&db, CF_BY_END_TIME)?, IteratorMode::Start) {
                let (key, _) = item?;
                let (at, id) = key.split_at(8.min(key.len()));
                let at = u64::from_be_bytes(at.try_into().map_err(|_| {
                    Error::Corrupt("retention queue key shorter than 8 bytes".into())
                })?);
                if at >= cutoff || out.len() >= limit {
                    break;
                }
                out.push(session_from_key(id)?);
            }
            Ok(out)
        })
        .await
    }

    async fn retained(&self) -> Result<Retained> {
        self.blocking(|s| {
            let mut retained = Retained {
                count: s.retained.load(Ordering::Relaxed),
                oldest_end: None,
            };
            let db = s.db()?;
            if let Some(item) = db
                .iterator_cf(cf(&db, CF_BY_END_TIME)?, IteratorMode::Start)
                .next()
            {
                let (key, _) = item?;
                let at: [u8; 8] =
                    key.get(..8)
                        .and_then(|k| k.try_into().ok())
                        .ok_or_else(|| {
                            Error::Corrupt("retention queue key shorter than 8 bytes".into())
                        })?;
                let us = i64::try_from(u64::from_be_bytes(at)).unwrap_or(i64::MAX);
                retained.oldest_end = Some(Timestamp::from_micros(us));
            }
            Ok(retained)
        })
        .await
    }

    async fn purge(&self, id: SessionId) -> Result<()> {
        self.change_session(id, SessionChange::Purge)
            .await
            .map(drop)
    }

    async fn check_health(&self) -> Result<()> {
        if self.writer.as_ref().is_none_or(|w| w.is_closed()) {
            return Err(Error::Backend("the audit writer has stopped".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl AuditLog for RocksStorage {
    async fn append(&self, session: SessionId, record: AuditRecord) -> Result<u64> {
        let bytes = codec::encode(&record)?;
        let mut delta = Counters::default();
        delta.add(&record);
        let (reply, rx) = oneshot::channel();
        let msg = WriterMsg::Append {
            session,
            bytes,
            sha256: record.artifact_sha256(),
            name_key: artifact_name_key(&record, session),
            delta,
            reply,
        };
        // Freed here, on the thread that built it and while it is still in cache,
        // rather than after the fsync on whichever worker polls the reply.
        drop(record);
        self.to_writer(msg, rx).await
    }

    async fn scan(&self, session: SessionId) -> Result<Vec<AuditRecord>> {
        self.blocking(move |s| {
            let mut out = Vec::new();
            s.for_each_event(session, |bytes| {
                out.push(codec::decode(bytes)?);
                Ok(())
            })?;
            Ok(out)
        })
        .await
    }

    async fn counters(&self, session: SessionId) -> Result<Counters> {
        self.blocking(move |s| Ok(s.load_state(session)?.counters))
            .await
    }

    async fn delete(&self, session: SessionId) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.to_writer(WriterMsg::Delete { session, reply }, rx)
            .await
    }

    async fn check_writable(&self) -> Result<()> {
        let Some(failure) = self.shared.failed() else {
            return Ok(());
        };
        // Refused requests write nothing, so the asking drives the recovery: the
        // writer reopens the database when it is time to try again.
        if let Some(writer) = &self.writer {
            let _ = writer.try_send(WriterMsg::Recover);
        }
        Err(Error::Backend(format!(
            "audit log writes are failing: {failure}"
        )))
    }

    async fn sessions_with_artifact(&self, sha256: [u8; 32]) -> Result<Vec<SessionId>> {
        self.blocking(move |s| {
            // The tail before the database: an ingest adds entries to the database
            // before it drops them from the tail, so none is missed in between.
            let mut keys = Vec::new();
            s.tail
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .artifacts_with_prefix(&sha256, &mut keys);
            let mode = IteratorMode::From(&sha256, Direction::Forward);
            let db = s.db()?;
            for item in db.iterator_cf(cf(&db, CF_ARTIFACTS)?, mode) {
                let (key, _) = item?;
                if !key.starts_with(&sha256) {
                    break;
                }
                keys.push(
                    (*key)
                        .try_into()
                        .map_err(|_| Error::Corrupt("artifact index key is not 48 bytes".into()))?,
                );
            }
            keys.sort_unstable();
            keys.dedup();
            keys.iter()
                .map(|key| session_from_key(&key[32..]))
                .collect()
        })
        .await
    }

    async fn artifacts_named(
        &self,
        name: &str,
        version: &str,
        kind: Option<&str>,
    ) -> Result<Vec<([u8; 32], SessionId)>> {
        let mut prefix = Vec::new();
        let fits = push_string(&mut prefix, name).and_then(|()| push_string(&mut prefix, version));
        if fits.is_none() {
            return Ok(Vec::new());
        }
        let name_len = prefix.len();
        if let Some(k) = kind
            && push_string(&mut prefix, k).is_none()
        {
            return Ok(Vec::new());
        }
        self.blocking(move |s| {
            // The tail first, as in `sessions_with_artifact`.
            let mut keys = Vec::new();
            s.tail
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .names_with_prefix(&prefix, &mut keys);
            let mode = IteratorMode::From(&prefix, Direction::Forward);
            let db = s.db()?;
            for item in db.iterator_cf(cf(&db, CF_ARTIFACT_NAMES)?, mode) {
                let (key, _) = item?;
                if !key.starts_with(&prefix) {
                    break;
                }
                keys.push(key.into_vec());
            }
            keys.sort_unstable();
            keys.dedup();
            keys.iter()
                .map(|key| split_name_key(key, name_len).map(|(_, sha, id)| (sha, id)))
                .collect()
        })
        .await
    }
}
