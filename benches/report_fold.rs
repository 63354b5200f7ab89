//! The report of a session with 10,000 artifacts: fold over the records and serialise
//! the JSON, from records in memory and the whole request path from a RocksDB scan of
//! flushed table and blob files.
//!
//! `cargo bench --bench report_fold`

mod common;

use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use fetchgate::audit::report;
use fetchgate_storage::rocks::RocksStorage;
use fetchgate_storage::{AuditLog, AuditRecord, Policy, SessionHeader, SessionId, Timestamp};

const ARTIFACTS: u64 = 10_000;

fn header() -> SessionHeader {
    SessionHeader {
        revoked: Some(Timestamp::from_micros(1_790_000_100_000_000)),
        ..SessionHeader::new(
            SessionId::from_bytes([3; 16]),
            [0; 32],
            Policy::Strict,
            Timestamp::from_micros(1_790_000_000_000_000),
            3600,
        )
    }
}

/// What `GET /session/{id}` does once it has the records: fold, then serialise.
fn render(h: &SessionHeader, records: Vec<AuditRecord>) {
    let r = report::fold(
        h,
        "/spool/x".as_ref(),
        Vec::new(),
        records,
        Timestamp::now(),
    );
    serde_json::to_writer(std::io::sink(), &r).unwrap();
}

fn bench(c: &mut Criterion) {
    let records: Vec<_> = (0..ARTIFACTS).map(common::download).collect();
    let h = header();
    let mut group = c.benchmark_group("report_10k_artifacts");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("fold_and_serialise", |b| {
        b.iter_batched(
            || records.clone(),
            |records| render(&h, records),
            BatchSize::LargeInput,
        )
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = RocksStorage::open(dir.path()).unwrap();
    rt.block_on(async {
        for r in &records {
            store.append(h.id, r.clone()).await.unwrap();
        }
    });
    // Reopening flushes the recovered log to table and blob files: the report is read
    // from disk (and the page cache), as it is for a session that ran for hours.
    drop(store);
    let store = RocksStorage::open(dir.path()).unwrap();
    group.bench_function("rocksdb_scan_fold_and_serialise", |b| {
        b.iter(|| {
            let records = rt.block_on(store.scan(h.id)).unwrap();
            assert_eq!(records.len() as u64, ARTIFACTS);
            render(&h, records);
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
