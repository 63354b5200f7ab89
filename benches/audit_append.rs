//! Audit append throughput through the RocksDB backend: many concurrent appenders,
//! group commit, every record durable (fsync'd) before it is acknowledged.
//!
//! `cargo bench --bench audit_append`

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fetchgate_storage::rocks::RocksStorage;
use fetchgate_storage::{AuditLog, SessionId};

const APPENDERS: u64 = 256;
const PER_ITER: u64 = 20_000;

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
    group.bench_function(format!("rocksdb_{APPENDERS}_appenders_durable"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let store = Arc::clone(&store);
                total += rt.block_on(async move {
                    let start = Instant::now();
                    let mut tasks = Vec::new();
                    for t in 0..APPENDERS {
                        let store = Arc::clone(&store);
                        tasks.push(tokio::spawn(async move {
                            let session = SessionId::from_bytes([(t % 64) as u8; 16]);
                            for i in 0..PER_ITER / APPENDERS {
                                store
                                    .append(session, common::download(t * 1_000_000 + i))
                                    .await
                                    .unwrap();
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
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
