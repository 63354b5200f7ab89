//! Audit append throughput through the RocksDB backend: many concurrent appenders,
//! group commit, every record durable (fsync'd) before it is acknowledged.
//!
//! `cargo bench --bench audit_append`

mod common;

/// The daemon's allocator (`src/main.rs`), so the bench measures what it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fetchgate_storage::rocks::RocksStorage;
use fetchgate_storage::{AuditLog, SessionId};

/// Concurrent appenders (in fetchgate: downloads finishing at the same time).
const APPENDERS: [u64; 3] = [64, 512, 4096];
const PER_ITER: u64 = 40_960;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RocksStorage::open(dir.path()).unwrap());
    let encoded = fetchgate_storage::codec::encode(&common::download(1))
        .unwrap()
        .len();
    eprintln!("record size encoded: {encoded} bytes");

    let mut group = c.benchmark_group("audit_append");
    group.throughput(Throughput::Elements(PER_ITER));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    for appenders in APPENDERS {
        group.bench_function(format!("rocksdb_{appenders}_appenders_durable"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let store = Arc::clone(&store);
                    // Records are built before the clock starts: this measures the log,
                    // not the caller's allocation of records.
                    let work: Vec<Vec<_>> = (0..appenders)
                        .map(|t| {
                            (0..PER_ITER / appenders)
                                .map(|i| common::download(t * 1_000_000 + i))
                                .collect()
                        })
                        .collect();
                    total += rt.block_on(async move {
                        let start = Instant::now();
                        let mut tasks = Vec::new();
                        for (t, records) in work.into_iter().enumerate() {
                            let store = Arc::clone(&store);
                            tasks.push(tokio::spawn(async move {
                                let session = SessionId::from_bytes([(t % 64) as u8; 16]);
                                for record in records {
                                    store.append(session, record).await.unwrap();
                                }
                            }));
                        }
                        for t in tasks {
                            t.await.unwrap();
                        }
                        start.elapsed()
                    });
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
