//! RocksDB-specific behaviour: data survives reopening, a damaged record is an error,
//! not a panic, and the audit writer reports its commits to an observer.

#[path = "support/records.rs"]
mod records;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fetchgate_storage::rocks::{OpenOptions, RocksStorage, WriterObserver};
use fetchgate_storage::{
    AuditLog, AuditRecord, Denied, DeniedStage, EndReason, Error, Policy, SessionHeader, SessionId,
    SessionStore, Timestamp,
};

fn record(n: u32) -> AuditRecord {
    AuditRecord::Denied(Denied {
        time: Timestamp::from_micros(i64::from(n)),
        method: "GET".into(),
        url: format!("http://h/{n}"),
        client_address: "127.0.0.1:1".into(),
        reason: "test".into(),
        stage: DeniedStage::Policy,
    })
}

/// A download of content whose sha256 is all `sha`, named `name` version 1.
fn download(sha: u8, name: &str) -> AuditRecord {
    records::named_download(1, [sha; 32], 1, name)
}

/// A session that is still live (not revoked).
fn live_header() -> SessionHeader {
    SessionHeader::new(
        SessionId::from_bytes([5; 16]),
        [1; 32],
        Policy::Permissive,
        Timestamp::from_micros(1_700_000_000_000_000),
        5,
    )
}

fn header() -> SessionHeader {
    SessionHeader {
        revoked: Some(Timestamp::from_micros(1_700_000_001_000_000)),
        ..SessionHeader::new(
            SessionId::from_bytes([4; 16]),
            [1; 32],
            Policy::Permissive,
            Timestamp::from_micros(1_700_000_000_000_000),
            5,
        )
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_and_records_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let id = header().id;
    {
        let s = RocksStorage::open(dir.path()).unwrap();
        s.create(&header()).await.unwrap();
        for n in 0..50 {
            s.append(id, record(n)).await.unwrap();
        }
    }
    let s = RocksStorage::open(dir.path()).unwrap();
    assert_eq!(s.get(id).await.unwrap(), Some(header()));
    let records = s.scan(id).await.unwrap();
    assert_eq!(records, (0..50).map(record).collect::<Vec<_>>());
    assert_eq!(s.counters(id).await.unwrap().denied, 50);
    // Numbering continues where it stopped.
    assert_eq!(s.append(id, record(50)).await.unwrap(), 50);
}

#[tokio::test(flavor = "multi_thread")]
async fn live_sessions_and_the_retention_count_are_rebuilt_on_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let session = |n: u8| SessionHeader {
        id: SessionId::from_bytes([n; 16]),
        ..header()
    };
    {
        let s = RocksStorage::open(dir.path()).unwrap();
        for n in 1..=4 {
            s.create(&session(n)).await.unwrap();
        }
        for n in [2, 3] {
            let at = Timestamp::from_micros(1_700_000_002_000_000 + i64::from(n));
            s.end(session(n).id, at, EndReason::Ended).await.unwrap();
        }
    }
    let s = RocksStorage::open(dir.path()).unwrap();
    let mut live: Vec<_> = s.list_live().await.unwrap().iter().map(|h| h.id).collect();
    live.sort_unstable();
    assert_eq!(live, vec![session(1).id, session(4).id]);
    let retained = s.retained().await.unwrap();
    assert_eq!(retained.count, 2);
    assert_eq!(
        retained.oldest_end,
        Some(Timestamp::from_micros(1_700_000_002_000_002))
    );
    s.purge(session(2).id).await.unwrap();
    assert_eq!(s.retained().await.unwrap().count, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_and_unknown_version_records_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let id = header().id;
    {
        let s = RocksStorage::open(dir.path()).unwrap();
        s.create(&header()).await.unwrap();
        s.append(id, record(0)).await.unwrap();
        s.append(id, record(1)).await.unwrap();
    }
    let mut key = id.as_bytes().to_vec();
    key.extend_from_slice(&1u64.to_be_bytes());
    {
        let db = raw_db(dir.path());
        let events = db.cf_handle("events").unwrap();
        db.put_cf(events, &key, [1u8, 0xff, 0xff, 0xff]).unwrap();
        let sessions = db.cf_handle("sessions").unwrap();
        db.put_cf(sessions, id.as_bytes(), [9u8, 1, 2, 3]).unwrap();
    }
    // The database opens; the damaged header is not listed as a live session.
    let s = RocksStorage::open(dir.path()).unwrap();
    assert!(s.list_live().await.unwrap().is_empty());
    let err = s.scan(id).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt(_)), "{err}");
    let err = s.get(id).await.unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedVersion { found: 9, .. }),
        "{err}"
    );
    // Deleting a session with a damaged record still works.
    s.delete(id).await.unwrap();
    assert!(s.scan(id).await.unwrap().is_empty());
}

/// Opens the test's database directly, as the backend's column families are.
fn raw_db(dir: &std::path::Path) -> rocksdb::DB {
    rocksdb::DB::open_cf(
        &rocksdb::Options::default(),
        dir,
        [
            "sessions",
            "events",
            "artifacts",
            "artifact_names",
            "by_end_time",
            "unindexed",
        ],
    )
    .unwrap()
}

/// The `events` values of a session, records and log state alike.
fn event_values(db: &rocksdb::DB, id: SessionId) -> Vec<(Vec<u8>, Vec<u8>)> {
    db.prefix_iterator_cf(db.cf_handle("events").unwrap(), id.as_bytes())
        .map(Result::unwrap)
        .take_while(|(k, _)| k.starts_with(id.as_bytes()))
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

/// Appends `make(n)` for every `n` at once, one task each; answers (sequence number, n)
/// sorted by sequence number.
/// Sessions that write at the same time share group commits and the `events` family:
/// each reads back exactly its own records in order, next to sessions whose ids differ
/// only in the last byte, before and after reopening, and deleting some leaves the
/// others whole.
#[tokio::test(flavor = "multi_thread")]
async fn interleaved_sessions_read_back_only_their_own_records() {
    const SESSIONS: u8 = 200;
    const RECORDS: u32 = 12;
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<SessionId> = (0..SESSIONS)
        .map(|i| {
            let mut bytes = [7u8; 16];
            bytes[15] = i;
            SessionId::from_bytes(bytes)
        })
        .collect();
    // Session `i`'s record `n` is told apart from every other session's by its URL.
    let record_of = |i: u8, n: u32| record(u32::from(i) * 1000 + n);
    {
        let s = Arc::new(RocksStorage::open(dir.path()).unwrap());
        for &id in &ids {
            s.create(&SessionHeader::new(
                id,
                [1; 32],
                Policy::Strict,
                Timestamp::now(),
                60,
            ))
            .await
            .unwrap();
        }
        for n in 0..RECORDS {
            let tasks: Vec<_> = (0..SESSIONS)
                .map(|i| {
                    let s = Arc::clone(&s);
                    let id = ids[usize::from(i)];
                    tokio::spawn(async move { s.append(id, record_of(i, n)).await.unwrap() })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        }
        for (i, &id) in (0..SESSIONS).zip(&ids) {
            let expected: Vec<_> = (0..RECORDS).map(|n| record_of(i, n)).collect();
            assert_eq!(s.scan(id).await.unwrap(), expected, "session {i}");
        }
        for &id in ids.iter().step_by(3) {
            s.delete(id).await.unwrap();
        }
    }
    let s = RocksStorage::open(dir.path()).unwrap();
    for (i, &id) in (0..SESSIONS).zip(&ids) {
        let records = s.scan(id).await.unwrap();
        if i % 3 == 0 {
            assert!(records.is_empty(), "deleted session {i}");
        } else {
            let expected: Vec<_> = (0..RECORDS).map(|n| record_of(i, n)).collect();
            assert_eq!(records, expected, "session {i}");
            assert_eq!(s.counters(id).await.unwrap().denied, u64::from(RECORDS));
        }
    }
}

async fn append_concurrently(
    s: &Arc<RocksStorage>,
    id: SessionId,
    ns: std::ops::Range<u32>,
    make: fn(u32) -> AuditRecord,
) -> Vec<(u64, u32)> {
    let tasks: Vec<_> = ns
        .map(|n| {
            let s = Arc::clone(s);
            tokio::spawn(async move { (s.append(id, make(n)).await.unwrap(), n) })
        })
        .collect();
    let mut by_seq = Vec::new();
    for t in tasks {
        by_seq.push(t.await.unwrap());
    }
    by_seq.sort_unstable();
    by_seq
}

/// Appends that share a group commit are stored as one chunk per session; appends that
/// do not are stored one value each, as earlier builds stored every record; a log
/// mixing both reads back whole and in order, and a damaged chunk is an error.
#[tokio::test(flavor = "multi_thread")]
async fn records_of_one_commit_share_a_chunk_and_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let id = header().id;
    let mut by_seq = Vec::new();
    {
        let s = Arc::new(RocksStorage::open(dir.path()).unwrap());
        s.create(&header()).await.unwrap();
        for n in 0..3 {
            by_seq.push((s.append(id, record(n)).await.unwrap(), n));
        }
        by_seq.extend(append_concurrently(&s, id, 3..400, record).await);
        by_seq.sort_unstable();
        assert_eq!(
            by_seq.iter().map(|p| p.0).collect::<Vec<_>>(),
            (0..400).collect::<Vec<_>>()
        );
        let expected: Vec<_> = by_seq.iter().map(|&(_, n)| record(n)).collect();
        assert_eq!(s.scan(id).await.unwrap(), expected);
    }
    let db = raw_db(dir.path());
    let values = event_values(&db, id);
    let chunks: Vec<_> = values
        .iter()
        .filter(|(_, v)| v[0] == fetchgate_storage::codec::CHUNK_TAG)
        .collect();
    assert!(!chunks.is_empty(), "concurrent appends made no chunk");
    // The first three appends were alone in their commits: one value each.
    for (seq, (key, value)) in values.iter().take(3).enumerate() {
        assert_eq!(key[16..], (seq as u64).to_be_bytes());
        assert_eq!(value[0], fetchgate_storage::codec::FORMAT_VERSION);
    }
    // Cut the first chunk short.
    let (key, value) = chunks[0];
    db.put_cf(
        db.cf_handle("events").unwrap(),
        key,
        &value[..value.len() - 1],
    )
    .unwrap();
    drop(db);
    let s = RocksStorage::open(dir.path()).unwrap();
    let err = s.scan(id).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt(_)), "{err}");
    s.delete(id).await.unwrap();
    assert!(s.scan(id).await.unwrap().is_empty());
}

#[derive(Default)]
struct CountingObserver {
    records: AtomicUsize,
    commits: AtomicUsize,
    max_queued: AtomicUsize,
    ingested: AtomicUsize,
}

impl WriterObserver for CountingObserver {
    fn committed(&self, records: usize, elapsed: Duration) {
        assert!(elapsed < Duration::from_secs(60));
        self.records.fetch_add(records, Ordering::SeqCst);
        self.commits.fetch_add(1, Ordering::SeqCst);
    }

    fn queue_depth(&self, queued: usize) {
        self.max_queued.fetch_max(queued, Ordering::SeqCst);
    }

    fn ingested(&self, entries: usize, elapsed: Duration) {
        assert!(elapsed < Duration::from_secs(60));
        self.ingested.fetch_add(entries, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_writer_reports_every_durable_append_to_its_observer() {
    let dir = tempfile::tempdir().unwrap();
    let observer = Arc::new(CountingObserver::default());
    let s = Arc::new(
        RocksStorage::open_with(
            dir.path(),
            OpenOptions {
                observer: Some(Arc::clone(&observer) as Arc<dyn WriterObserver>),
                ..OpenOptions::default()
            },
        )
        .unwrap(),
    );
    let id = header().id;
    s.create(&header()).await.unwrap();
    let appends: Vec<_> = (0..40)
        .map(|n| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.append(id, record(n)).await })
        })
        .collect();
    for a in appends {
        a.await.unwrap().unwrap();
    }
    // Every acknowledged append was reported as committed, in one or more batches.
    assert_eq!(observer.records.load(Ordering::SeqCst), 40);
    let commits = observer.commits.load(Ordering::SeqCst);
    assert!((1..=40).contains(&commits), "{commits} commits");
    assert!(observer.max_queued.load(Ordering::SeqCst) >= 1);
}

/// The bytes of the write-ahead log files (`NNNNNN.log`) in the database directory.
fn wal_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// The write-ahead log stays near `max_wal_bytes` however much is appended: the small
/// families, which would otherwise hold the oldest log forever, are flushed (without
/// the cap, all 16 MiB stay in one log). Dropped log files are reused, so reopening
/// replays files that still hold older records past their new end: every record is
/// there once, in order, and the latest session change wins.
#[tokio::test(flavor = "multi_thread")]
async fn the_write_ahead_log_is_bounded_and_reused_without_losing_records() {
    const CAP: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let options = OpenOptions {
        max_wal_bytes: CAP,
        ..OpenOptions::default()
    };
    let live = live_header();
    let id = live.id;
    let big = |n: u32| {
        AuditRecord::Denied(Denied {
            reason: format!("{n:0>4096}"),
            ..match record(n) {
                AuditRecord::Denied(d) => d,
                AuditRecord::Download(_) => unreachable!(),
            }
        })
    };
    // 4,096 records of 4 KiB: 16 MiB, sixteen times the cap. A session change every
    // 64 records puts data in the sessions family too.
    let count = 4096;
    {
        let s = RocksStorage::open_with(dir.path(), options.clone()).unwrap();
        s.create(&live).await.unwrap();
        for n in 0..count {
            s.append(id, big(n)).await.unwrap();
            if n % 64 == 0 {
                s.set_timeout(id, 5 + u64::from(n)).await.unwrap();
            }
        }
        let on_disk = wal_bytes(dir.path());
        assert!(
            on_disk <= 8 * CAP,
            "{on_disk} bytes of write-ahead log for 16 MiB appended with a 1 MiB cap"
        );
    }
    let s = RocksStorage::open_with(dir.path(), options).unwrap();
    let records = s.scan(id).await.unwrap();
    assert_eq!(records.len(), count as usize);
    assert!(records.into_iter().eq((0..count).map(big)));
    assert_eq!(
        s.get(id).await.unwrap().map(|h| h.timeout_secs),
        Some(5 + 4032)
    );
}

/// Index entries are reported when they are ingested: those of 30 downloads (two each,
/// an ingest every 8 entries, the rest at close) are all reported once.
#[tokio::test(flavor = "multi_thread")]
async fn the_writer_reports_every_ingested_index_entry_to_its_observer() {
    let dir = tempfile::tempdir().unwrap();
    let observer = Arc::new(CountingObserver::default());
    let s = RocksStorage::open_with(
        dir.path(),
        OpenOptions {
            observer: Some(Arc::clone(&observer) as Arc<dyn WriterObserver>),
            index_tail_entries: 8,
            ..OpenOptions::default()
        },
    )
    .unwrap();
    let id = header().id;
    for n in 0..30 {
        s.append(id, download(n, &format!("p{n}"))).await.unwrap();
    }
    drop(s);
    assert_eq!(observer.ingested.load(Ordering::SeqCst), 60);
}

/// A session header exactly as the build before owners and labels wrote it (format
/// version 1), in a database with that build's column families.
#[tokio::test(flavor = "multi_thread")]
async fn sessions_written_by_the_previous_format_load_after_an_upgrade() {
    const V1_HEADER: &str = "0107070707070707070707070707070707aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa01fd00803c3048140c00fb100e0000010a62617369632d617574680b68747470733a2f2f782f2a03753a7000";
    let bytes: Vec<u8> = (0..V1_HEADER.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&V1_HEADER[i..i + 2], 16).unwrap())
        .collect();
    let id = SessionId::from_bytes([7; 16]);
    let dir = tempfile::tempdir().unwrap();
    {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let old = rocksdb::DB::open_cf(
            &opts,
            dir.path(),
            ["sessions", "events", "artifacts", "by_end_time"],
        )
        .unwrap();
        old.put_cf(old.cf_handle("sessions").unwrap(), id.as_bytes(), &bytes)
            .unwrap();
    }
    let s = RocksStorage::open(dir.path()).unwrap();
    let h = s.get(id).await.unwrap().expect("the old session is there");
    assert_eq!((h.policy, h.timeout_secs), (Policy::Permissive, 3600));
    assert_eq!(h.created, Timestamp::from_micros(1_700_000_000_000_000));
    assert_eq!(h.secrets[0].url_glob, "https://x/*");
    assert_eq!((h.owner.as_deref(), h.labels.len()), (None, 0));
    assert_eq!(s.list().await.unwrap(), vec![h.clone()]);
    // Changed, it is written in the new format and still reads back.
    s.set_timeout(id, 7200).await.unwrap();
    drop(s);
    let s = RocksStorage::open(dir.path()).unwrap();
    assert_eq!(s.get(id).await.unwrap().map(|h| h.timeout_secs), Some(7200));
}

/// The keys of one column family.
fn keys(db: &rocksdb::DB, family: &str) -> Vec<Vec<u8>> {
    db.iterator_cf(db.cf_handle(family).unwrap(), rocksdb::IteratorMode::Start)
        .map(|item| item.unwrap().0.to_vec())
        .collect()
}

/// Index entries wait in memory; closing the store writes them to the database (so
/// nothing is left to rebuild), and they are found after reopening.
#[tokio::test(flavor = "multi_thread")]
async fn the_index_tail_is_written_out_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let id = header().id;
    {
        let s = RocksStorage::open(dir.path()).unwrap();
        for n in 0..10 {
            s.append(id, download(n, &format!("p{n}"))).await.unwrap();
        }
        assert_eq!(s.sessions_with_artifact([3; 32]).await.unwrap(), vec![id]);
    }
    {
        let db = raw_db(dir.path());
        assert_eq!(keys(&db, "artifacts").len(), 10);
        assert_eq!(keys(&db, "artifact_names").len(), 10);
        assert!(keys(&db, "unindexed").is_empty());
    }
    let s = RocksStorage::open(dir.path()).unwrap();
    assert_eq!(s.sessions_with_artifact([3; 32]).await.unwrap(), vec![id]);
    assert_eq!(
        s.artifacts_named("p7", "1", None).await.unwrap(),
        vec![([7; 32], id)]
    );
}

/// A session deleted while its index entries wait in memory: an ingest after the
/// delete does not bring them back, and neither does reopening.
#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_sessions_waiting_index_entries_stay_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (gone, kept) = (
        SessionId::from_bytes([1; 16]),
        SessionId::from_bytes([2; 16]),
    );
    let options = OpenOptions {
        index_tail_entries: 20,
        ..OpenOptions::default()
    };
    {
        let s = RocksStorage::open_with(dir.path(), options.clone()).unwrap();
        s.append(gone, download(1, "gone")).await.unwrap();
        s.append(kept, download(2, "kept")).await.unwrap();
        assert_eq!(s.sessions_with_artifact([1; 32]).await.unwrap(), vec![gone]);
        s.delete(gone).await.unwrap();
        assert!(s.sessions_with_artifact([1; 32]).await.unwrap().is_empty());
        // Enough entries for an ingest (two per download).
        for n in 10..30 {
            s.append(kept, download(n, "more")).await.unwrap();
        }
        assert!(s.sessions_with_artifact([1; 32]).await.unwrap().is_empty());
        assert!(
            s.artifacts_named("gone", "1", None)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(s.sessions_with_artifact([2; 32]).await.unwrap(), vec![kept]);
    }
    {
        let db = raw_db(dir.path());
        let artifacts = keys(&db, "artifacts");
        assert_eq!(
            artifacts.len(),
            21,
            "every entry of `kept` is in the database"
        );
        assert!(artifacts.iter().all(|k| k.ends_with(kept.as_bytes())));
    }
    let s = RocksStorage::open_with(dir.path(), options).unwrap();
    assert!(s.sessions_with_artifact([1; 32]).await.unwrap().is_empty());
    assert_eq!(
        s.sessions_with_artifact([29; 32]).await.unwrap(),
        vec![kept]
    );
}

/// Chunks of 1 KiB and more are kept in blob files once flushed (reopening flushes
/// what the write-ahead log held); they read back whole and in order, and deleting
/// the session removes them from reads.
#[tokio::test(flavor = "multi_thread")]
async fn large_chunks_are_stored_in_blob_files_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let live = live_header();
    let id = live.id;
    let big = |n: u32| {
        let mut r = record(n);
        if let AuditRecord::Denied(d) = &mut r {
            d.reason = format!("{n} {}", "y".repeat(300));
        }
        r
    };
    let s = Arc::new(RocksStorage::open(dir.path()).unwrap());
    let by_seq = append_concurrently(&s, id, 0..200, big).await;
    drop(s);
    let expected: Vec<_> = by_seq.iter().map(|&(_, n)| big(n)).collect();
    let s = RocksStorage::open(dir.path()).unwrap();
    let blob_files = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "blob")
        })
        .count();
    assert!(blob_files > 0, "no blob file was written");
    assert_eq!(s.scan(id).await.unwrap(), expected);
    s.delete(id).await.unwrap();
    assert!(s.scan(id).await.unwrap().is_empty());
}
