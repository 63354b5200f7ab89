//! The trait-level suite every backend must pass: the same tests, run against the
//! in-memory store, against RocksDB in a temporary directory (twice: with the default
//! index tail and with one ingested every other entry) and (the session-store
//! half; audit records never go to Redis) against a real redis-server.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fetchgate_storage::memory::MemoryStorage;
use fetchgate_storage::redis_store::{RedisConfig, RedisStorage};
use fetchgate_storage::rocks::{OpenOptions, RocksStorage};
use fetchgate_storage::{
    AuditLog, AuditRecord, BodyDigest, Denied, DeniedStage, Download, EndReason, HeaderList,
    Policy, Retained, SessionHeader, SessionId, SessionStore, Timestamp,
};

/// A backend under test; `_dir` keeps the RocksDB directory alive, `_redis` the server.
struct Backend {
    sessions: Arc<dyn SessionStore>,
    log: Arc<dyn AuditLog>,
    _dir: Option<tempfile::TempDir>,
    _redis: Option<support::RedisServer>,
}

fn memory() -> Backend {
    let s = Arc::new(MemoryStorage::new());
    Backend {
        sessions: s.clone(),
        log: s,
        _dir: None,
        _redis: None,
    }
}

fn rocks() -> Backend {
    rocks_with(OpenOptions::default())
}

/// RocksDB ingesting its index tail after every other entry, so that queries read
/// entries from ingested files and from memory at once.
fn rocks_ingesting() -> Backend {
    rocks_with(OpenOptions {
        index_tail_entries: 2,
        ..OpenOptions::default()
    })
}

fn rocks_with(options: OpenOptions) -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(RocksStorage::open_with(dir.path(), options).unwrap());
    Backend {
        sessions: s.clone(),
        log: s,
        _dir: Some(dir),
        _redis: None,
    }
}

/// Redis for sessions (the suite's headers were created in 2023: the keys are kept a
/// century past their expiry so that none expires under the test). Its audit log is
/// the in-memory one, which only the session-store tests below touch.
async fn redis() -> Backend {
    let server = support::RedisServer::start();
    let store = RedisStorage::connect(&RedisConfig {
        url: server.url(),
        key_prefix: "suite:".into(),
        retention: Duration::from_secs(100 * 365 * 24 * 3600),
    })
    .await
    .unwrap();
    Backend {
        sessions: Arc::new(store),
        log: Arc::new(MemoryStorage::new()),
        _dir: None,
        _redis: Some(server),
    }
}

macro_rules! for_each_backend {
    ($($name:ident),* $(,)?) => {
        mod memory_backend { $(#[tokio::test(flavor = "multi_thread")] async fn $name() { super::$name(super::memory()).await } )* }
        mod rocksdb_backend { $(#[tokio::test(flavor = "multi_thread")] async fn $name() { super::$name(super::rocks()).await } )* }
        mod rocksdb_ingesting_backend { $(#[tokio::test(flavor = "multi_thread")] async fn $name() { super::$name(super::rocks_ingesting()).await } )* }
    };
}

/// Session-store tests, which every backend including Redis must pass.
macro_rules! for_each_session_store {
    ($($name:ident),* $(,)?) => {
        mod session_store {
            use super::*;
            for_each_backend!($($name),*);
            mod redis_backend { $(#[tokio::test(flavor = "multi_thread")] async fn $name() { super::$name(super::redis().await).await } )* }
        }
    };
}

for_each_session_store!(
    created_session_reads_back_identically,
    creating_an_existing_id_is_refused,
    revoke_keeps_the_first_revocation_time,
    end_revokes_and_queues_for_retention,
    set_timeout_changes_live_sessions_only,
    purge_removes_header_and_queue_entry,
    concurrent_session_changes_apply_each_exactly_once,
    unknown_session_reads_as_empty_or_none,
    retained_counts_ended_sessions_and_the_oldest_end,
    list_live_holds_the_sessions_that_have_not_ended,
);

mod audit_log {
    use super::*;
    for_each_backend!(
        records_scan_in_append_order_with_sequence_numbers,
        records_appended_after_the_session_ends_continue_its_log,
        sessions_do_not_see_each_others_records,
        delete_removes_records_counters_and_index_entries,
        concurrent_appenders_lose_nothing,
        artifact_index_finds_every_session,
        name_index_finds_sessions_by_name_version_and_type,
        unknown_records_read_as_empty,
    );
}

fn id(n: u8) -> SessionId {
    SessionId::from_bytes([n; 16])
}

fn header(n: u8) -> SessionHeader {
    SessionHeader {
        id: id(n),
        token_hash: [n; 32],
        policy: Policy::Strict,
        created: Timestamp::from_micros(1_700_000_000_000_000 + i64::from(n)),
        timeout_secs: 60,
        revoked: None,
        ended: None,
        secrets: vec![],
        inspectors_configuration: Some("{}".into()),
        owner: Some(format!("owner-{n}")),
        labels: [("build".to_owned(), format!("b{n}"))].into(),
    }
}

fn download(url: &str, sha: Option<u8>) -> AuditRecord {
    AuditRecord::Download(Box::new(Download {
        start: Timestamp::from_micros(1),
        end: Timestamp::from_micros(2),
        method: "GET".into(),
        url: url.into(),
        client_address: "127.0.0.1:5000".into(),
        user_agent: Some("curl/8".into()),
        status_code: 200,
        status: "200 OK".into(),
        content_type: None,
        request_headers: HeaderList::from_iter([("Accept", ["*/*"])]),
        response_headers: HeaderList::default(),
        body: sha.map(|s| BodyDigest {
            sha1: [s; 20],
            sha256: [s; 32],
            size: 10,
        }),
        failure: None,
        request_inspection: Default::default(),
        response_inspection: Default::default(),
        metadata: BTreeMap::new(),
    }))
}

fn denied(url: &str) -> AuditRecord {
    AuditRecord::Denied(Denied {
        time: Timestamp::from_micros(3),
        method: "GET".into(),
        url: url.into(),
        client_address: "127.0.0.1:5000".into(),
        reason: "acl".into(),
        stage: DeniedStage::Acl,
    })
}

async fn created_session_reads_back_identically(b: Backend) {
    b.sessions.create(&header(1)).await.unwrap();
    assert_eq!(b.sessions.get(id(1)).await.unwrap(), Some(header(1)));
    assert_eq!(b.sessions.list().await.unwrap(), vec![header(1)]);
}

async fn creating_an_existing_id_is_refused(b: Backend) {
    b.sessions.create(&header(1)).await.unwrap();
    let err = b.sessions.create(&header(1)).await.unwrap_err();
    assert!(
        matches!(err, fetchgate_storage::Error::AlreadyExists(_)),
        "{err}"
    );
}

async fn revoke_keeps_the_first_revocation_time(b: Backend) {
    b.sessions.create(&header(1)).await.unwrap();
    let t1 = Timestamp::from_micros(10);
    let h = b.sessions.revoke(id(1), t1).await.unwrap().unwrap();
    assert_eq!(h.revoked, Some(t1));
    let h = b
        .sessions
        .revoke(id(1), Timestamp::from_micros(20))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(h.revoked, Some(t1));
    assert_eq!(
        b.sessions.get(id(1)).await.unwrap().unwrap().revoked,
        Some(t1)
    );
    assert_eq!(b.sessions.revoke(id(9), t1).await.unwrap(), None);
}

async fn end_revokes_and_queues_for_retention(b: Backend) {
    for n in 1..=3 {
        b.sessions.create(&header(n)).await.unwrap();
    }
    b.sessions
        .end(id(2), Timestamp::from_micros(200), EndReason::Ended)
        .await
        .unwrap();
    b.sessions
        .end(id(1), Timestamp::from_micros(100), EndReason::Expired)
        .await
        .unwrap();
    // A second end changes nothing.
    let h = b
        .sessions
        .end(id(1), Timestamp::from_micros(999), EndReason::Ended)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(h.ended.unwrap().at, Timestamp::from_micros(100));
    assert_eq!(h.ended.unwrap().reason, EndReason::Expired);
    assert_eq!(h.revoked, Some(Timestamp::from_micros(100)));
    let q = b
        .sessions
        .ended_before(Timestamp::from_micros(1000), 10)
        .await
        .unwrap();
    assert_eq!(q, vec![id(1), id(2)]);
    let q = b
        .sessions
        .ended_before(Timestamp::from_micros(200), 10)
        .await
        .unwrap();
    assert_eq!(q, vec![id(1)]);
    let q = b
        .sessions
        .ended_before(Timestamp::from_micros(1000), 1)
        .await
        .unwrap();
    assert_eq!(q, vec![id(1)]);
}

async fn set_timeout_changes_live_sessions_only(b: Backend) {
    b.sessions.create(&header(1)).await.unwrap();
    let h = b.sessions.set_timeout(id(1), 999).await.unwrap().unwrap();
    assert_eq!(h.timeout_secs, 999);
    b.sessions
        .end(id(1), Timestamp::from_micros(5), EndReason::Ended)
        .await
        .unwrap();
    let h = b.sessions.set_timeout(id(1), 5).await.unwrap().unwrap();
    assert_eq!(h.timeout_secs, 999);
}

async fn purge_removes_header_and_queue_entry(b: Backend) {
    b.sessions.create(&header(1)).await.unwrap();
    b.sessions
        .end(id(1), Timestamp::from_micros(5), EndReason::Ended)
        .await
        .unwrap();
    b.sessions.purge(id(1)).await.unwrap();
    assert_eq!(b.sessions.get(id(1)).await.unwrap(), None);
    assert!(
        b.sessions
            .ended_before(Timestamp::from_micros(100), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Purging twice is harmless.
    b.sessions.purge(id(1)).await.unwrap();
}

async fn records_scan_in_append_order_with_sequence_numbers(b: Backend) {
    let records: Vec<_> = (0..300)
        .map(|i| {
            if i % 7 == 0 {
                denied(&format!("http://h/{i}"))
            } else {
                download(&format!("http://h/{i}"), Some((i % 5) as u8))
            }
        })
        .collect();
    for (i, r) in records.iter().enumerate() {
        assert_eq!(b.log.append(id(1), r.clone()).await.unwrap(), i as u64);
    }
    assert_eq!(b.log.scan(id(1)).await.unwrap(), records);
    let c = b.log.counters(id(1)).await.unwrap();
    assert_eq!((c.downloads, c.denied), (257, 43));
}

async fn records_appended_after_the_session_ends_continue_its_log(b: Backend) {
    // A download in flight when its session ends is still recorded when it completes.
    b.sessions.create(&header(1)).await.unwrap();
    let mut records = vec![download("http://h/0", Some(1)), denied("http://h/1")];
    for (i, r) in records.iter().enumerate() {
        assert_eq!(b.log.append(id(1), r.clone()).await.unwrap(), i as u64);
    }
    b.sessions
        .end(id(1), Timestamp::from_micros(5), EndReason::Ended)
        .await
        .unwrap();
    for (i, r) in [download("http://h/2", Some(2)), denied("http://h/3")]
        .into_iter()
        .enumerate()
    {
        assert_eq!(b.log.append(id(1), r.clone()).await.unwrap(), 2 + i as u64);
        records.push(r);
    }
    assert_eq!(b.log.scan(id(1)).await.unwrap(), records);
    let c = b.log.counters(id(1)).await.unwrap();
    assert_eq!((c.downloads, c.denied), (2, 2));
}

async fn sessions_do_not_see_each_others_records(b: Backend) {
    // Adjacent ids: a prefix scan that overran would show the neighbour's records.
    let a = SessionId::from_bytes([1; 16]);
    let mut next = [1u8; 16];
    next[15] = 2;
    let c = SessionId::from_bytes(next);
    b.log.append(a, download("http://a/1", None)).await.unwrap();
    b.log.append(c, download("http://c/1", None)).await.unwrap();
    b.log.append(a, download("http://a/2", None)).await.unwrap();
    let urls = |rs: Vec<AuditRecord>| -> Vec<String> {
        rs.into_iter()
            .map(|r| match r {
                AuditRecord::Download(d) => d.url,
                AuditRecord::Denied(d) => d.url,
            })
            .collect()
    };
    assert_eq!(
        urls(b.log.scan(a).await.unwrap()),
        ["http://a/1", "http://a/2"]
    );
    assert_eq!(urls(b.log.scan(c).await.unwrap()), ["http://c/1"]);
    assert_eq!(b.log.append(c, denied("http://c/2")).await.unwrap(), 1);
}

async fn delete_removes_records_counters_and_index_entries(b: Backend) {
    b.log
        .append(id(1), download("http://a/1", Some(7)))
        .await
        .unwrap();
    b.log
        .append(id(2), download("http://b/1", Some(7)))
        .await
        .unwrap();
    b.log.delete(id(1)).await.unwrap();
    assert!(b.log.scan(id(1)).await.unwrap().is_empty());
    assert_eq!(b.log.counters(id(1)).await.unwrap().downloads, 0);
    assert_eq!(
        b.log.sessions_with_artifact([7; 32]).await.unwrap(),
        vec![id(2)]
    );
    assert_eq!(b.log.scan(id(2)).await.unwrap().len(), 1);
    // A log written after a delete starts again at 0.
    assert_eq!(b.log.append(id(1), denied("http://a/2")).await.unwrap(), 0);
}

async fn concurrent_session_changes_apply_each_exactly_once(b: Backend) {
    // Sixteen racing creates of one id: exactly one wins.
    let creates: Vec<_> = (0..16)
        .map(|_| {
            let s = b.sessions.clone();
            tokio::spawn(async move { s.create(&header(1)).await })
        })
        .collect();
    let mut won = 0;
    for c in creates {
        match c.await.unwrap() {
            Ok(()) => won += 1,
            Err(fetchgate_storage::Error::AlreadyExists(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(won, 1);
    // Racing revocations, ends and renewals of many sessions, mixed with appends: each
    // session keeps its first revocation and end, and every record.
    for n in 2..=20 {
        b.sessions.create(&header(n)).await.unwrap();
    }
    let mut tasks = Vec::new();
    for n in 2..=20u8 {
        for k in 1..=4u64 {
            let (s, log) = (b.sessions.clone(), b.log.clone());
            tasks.push(tokio::spawn(async move {
                s.set_timeout(id(n), 1000 + k).await.unwrap();
                s.revoke(id(n), Timestamp::from_micros(k as i64 * 10))
                    .await
                    .unwrap();
                log.append(id(n), denied(&format!("http://h/{n}/{k}")))
                    .await
                    .unwrap();
                s.end(
                    id(n),
                    Timestamp::from_micros(k as i64 * 100),
                    EndReason::Ended,
                )
                .await
                .unwrap();
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    for n in 2..=20u8 {
        let h = b.sessions.get(id(n)).await.unwrap().unwrap();
        let revoked = h.revoked.unwrap().as_micros();
        let ended = h.ended.unwrap().at.as_micros();
        assert!([10, 20, 30, 40].contains(&revoked), "{h:?}");
        assert!([100, 200, 300, 400].contains(&ended), "{h:?}");
        assert!((1001..=1004).contains(&h.timeout_secs), "{h:?}");
        assert_eq!(b.log.counters(id(n)).await.unwrap().denied, 4);
    }
    let queued = b
        .sessions
        .ended_before(Timestamp::from_micros(1000), 100)
        .await
        .unwrap();
    assert_eq!(queued.len(), 19, "one retention entry per ended session");
}

async fn concurrent_appenders_lose_nothing(b: Backend) {
    let mut tasks = Vec::new();
    for t in 0..16u8 {
        let log = b.log.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..100 {
                log.append(id(t % 4), download(&format!("http://h/{t}/{i}"), None))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for s in 0..4 {
        let records = b.log.scan(id(s)).await.unwrap();
        assert_eq!(records.len(), 400);
        assert_eq!(b.log.counters(id(s)).await.unwrap().downloads, 400);
        // Each appender's own records stay in its order.
        for t in (s..16).step_by(4) {
            let mine: Vec<String> = records
                .iter()
                .filter_map(|r| match r {
                    AuditRecord::Download(d) if d.url.starts_with(&format!("http://h/{t}/")) => {
                        Some(d.url.clone())
                    }
                    _ => None,
                })
                .collect();
            let want: Vec<String> = (0..100).map(|i| format!("http://h/{t}/{i}")).collect();
            assert_eq!(mine, want);
        }
    }
}

async fn artifact_index_finds_every_session(b: Backend) {
    b.log
        .append(id(3), download("http://a", Some(9)))
        .await
        .unwrap();
    b.log
        .append(id(1), download("http://a", Some(9)))
        .await
        .unwrap();
    b.log
        .append(id(1), download("http://a", Some(9)))
        .await
        .unwrap();
    b.log
        .append(id(2), download("http://b", Some(8)))
        .await
        .unwrap();
    assert_eq!(
        b.log.sessions_with_artifact([9; 32]).await.unwrap(),
        vec![id(1), id(3)]
    );
    assert_eq!(
        b.log.sessions_with_artifact([8; 32]).await.unwrap(),
        vec![id(2)]
    );
    assert!(
        b.log
            .sessions_with_artifact([1; 32])
            .await
            .unwrap()
            .is_empty()
    );
}

async fn list_live_holds_the_sessions_that_have_not_ended(b: Backend) {
    async fn live_ids(b: &Backend) -> Vec<SessionId> {
        let mut ids: Vec<_> = b
            .sessions
            .list_live()
            .await
            .unwrap()
            .iter()
            .map(|h| h.id)
            .collect();
        ids.sort_unstable();
        ids
    }
    assert!(live_ids(&b).await.is_empty());
    for n in 1..=4 {
        b.sessions.create(&header(n)).await.unwrap();
    }
    // Created already ended (as an import would): never live.
    let mut imported = header(5);
    imported.ended = Some(fetchgate_storage::Ended {
        at: Timestamp::from_micros(50),
        reason: EndReason::Ended,
    });
    b.sessions.create(&imported).await.unwrap();
    b.sessions
        .revoke(id(2), Timestamp::from_micros(10))
        .await
        .unwrap();
    b.sessions
        .end(id(3), Timestamp::from_micros(20), EndReason::Expired)
        .await
        .unwrap();
    b.sessions.set_timeout(id(4), 600).await.unwrap();
    assert_eq!(live_ids(&b).await, vec![id(1), id(2), id(4)]);
    let live = b.sessions.list_live().await.unwrap();
    let four = live.iter().find(|h| h.id == id(4)).unwrap();
    assert_eq!(four.timeout_secs, 600, "the live copy follows changes");
    let two = live.iter().find(|h| h.id == id(2)).unwrap();
    assert_eq!(two.revoked, Some(Timestamp::from_micros(10)));
    b.sessions
        .end(id(1), Timestamp::from_micros(30), EndReason::Ended)
        .await
        .unwrap();
    b.sessions.purge(id(4)).await.unwrap();
    assert_eq!(live_ids(&b).await, vec![id(2)]);
    assert_eq!(b.sessions.list().await.unwrap().len(), 4, "1, 2, 3 and 5");
}

async fn retained_counts_ended_sessions_and_the_oldest_end(b: Backend) {
    assert_eq!(b.sessions.retained().await.unwrap(), Retained::default());
    for n in 1..=3 {
        b.sessions.create(&header(n)).await.unwrap();
    }
    let at = |us: i64| Timestamp::from_micros(1_800_000_000_000_000 + us);
    b.sessions
        .end(id(2), at(5), EndReason::Ended)
        .await
        .unwrap();
    b.sessions
        .end(id(3), at(2), EndReason::Expired)
        .await
        .unwrap();
    // Ending twice does not count twice; a live session is not retained.
    b.sessions
        .end(id(3), at(9), EndReason::Ended)
        .await
        .unwrap();
    let r = b.sessions.retained().await.unwrap();
    assert_eq!((r.count, r.oldest_end), (2, Some(at(2))));
    b.sessions.purge(id(3)).await.unwrap();
    let r = b.sessions.retained().await.unwrap();
    assert_eq!((r.count, r.oldest_end), (1, Some(at(5))));
}

fn named(sha: u8, name: &str, version: &str, kind: Option<&str>) -> AuditRecord {
    let mut r = download("http://a/pool/x.deb", Some(sha));
    if let AuditRecord::Download(d) = &mut r {
        d.metadata.insert("name".into(), name.into());
        d.metadata.insert("version".into(), version.into());
        if let Some(k) = kind {
            d.metadata.insert("type".into(), k.into());
        }
    }
    r
}

async fn name_index_finds_sessions_by_name_version_and_type(b: Backend) {
    const DEB: &str = "application/vnd.debian.binary-package";
    b.log
        .append(id(3), named(1, "libc6", "2.36", Some(DEB)))
        .await
        .unwrap();
    b.log
        .append(id(1), named(1, "libc6", "2.36", Some(DEB)))
        .await
        .unwrap();
    b.log
        .append(id(2), named(2, "libc6", "2.37", Some(DEB)))
        .await
        .unwrap();
    b.log
        .append(id(4), named(3, "libc6", "2.36", None))
        .await
        .unwrap();
    // A name that is a prefix of another, and a record without a version, match nothing.
    b.log
        .append(id(5), named(4, "libc", "62.36", Some(DEB)))
        .await
        .unwrap();
    let mut no_version = download("http://a/y", Some(5));
    if let AuditRecord::Download(d) = &mut no_version {
        d.metadata.insert("name".into(), "libc6".into());
    }
    b.log.append(id(6), no_version).await.unwrap();

    assert_eq!(
        b.log
            .artifacts_named("libc6", "2.36", Some(DEB))
            .await
            .unwrap(),
        vec![([1; 32], id(1)), ([1; 32], id(3))]
    );
    assert_eq!(
        b.log.artifacts_named("libc6", "2.36", None).await.unwrap(),
        vec![([3; 32], id(4)), ([1; 32], id(1)), ([1; 32], id(3))]
    );
    assert_eq!(
        b.log.artifacts_named("libc6", "2.37", None).await.unwrap(),
        vec![([2; 32], id(2))]
    );
    assert!(
        b.log
            .artifacts_named("libc", "6", None)
            .await
            .unwrap()
            .is_empty()
    );
    b.log.delete(id(1)).await.unwrap();
    assert_eq!(
        b.log
            .artifacts_named("libc6", "2.36", Some(DEB))
            .await
            .unwrap(),
        vec![([1; 32], id(3))]
    );
}

async fn unknown_session_reads_as_empty_or_none(b: Backend) {
    assert_eq!(b.sessions.get(id(5)).await.unwrap(), None);
    assert_eq!(
        b.sessions
            .end(id(5), Timestamp::from_micros(1), EndReason::Ended)
            .await
            .unwrap(),
        None
    );
    assert_eq!(b.sessions.set_timeout(id(5), 1).await.unwrap(), None);
    assert_eq!(
        b.sessions
            .revoke(id(5), Timestamp::from_micros(1))
            .await
            .unwrap(),
        None
    );
    assert!(b.sessions.list().await.unwrap().is_empty());
}

async fn unknown_records_read_as_empty(b: Backend) {
    assert!(b.log.scan(id(5)).await.unwrap().is_empty());
    b.log.delete(id(5)).await.unwrap();
}
