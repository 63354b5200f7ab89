//! Audit append throughput through the RocksDB backend: many concurrent appenders,
//! group commit, every record durable (fsync'd) before it is acknowledged.
//! Each appender builds a record just before appending it, as the proxy does when a
//! download ends, and the clock counts the building too. (Building all records before
//! the clock, as this bench once did, left 40 MB of them cold in memory, and encoding
//! and freeing them measured cache misses the daemon does not have: 115k records/s
//! then against 143k now, building included.)
//!
//! `cargo bench -p fetchgate-storage --bench audit_append` (it lives in the storage crate
//! so that a release build of it compiles RocksDB but not the daemon)

#[path = "../../benches/common/mod.rs"]
mod common;
mod support;

/// The daemon's allocator (`src/main.rs`), so the bench measures what it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fetchgate_storage::{AuditLog, SessionId};
use tokio::sync::Barrier;

/// Concurrent appenders (in fetchgate: downloads finishing at the same time).
const APPENDERS: [u64; 3] = [64, 512, 4096];
const PER_ITER: u64 = 40_960;

fn bench(c: &mut Criterion) {
    let (rt, _dir, store) = support::runtime_and_store();
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
                    total += rt.block_on(async move {
                        // Every appender is spawned and waiting before the clock starts.
                        let ready = Arc::new(Barrier::new(appenders as usize + 1));
                        let mut tasks = Vec::new();
                        for t in 0..appenders {
                            let store = Arc::clone(&store);
                            let ready = Arc::clone(&ready);
                            tasks.push(tokio::spawn(async move {
                                ready.wait().await;
                                let session = SessionId::from_bytes([(t % 64) as u8; 16]);
                                for i in 0..PER_ITER / appenders {
                                    let record = common::download(t * 1_000_000 + i);
                                    store.append(session, record).await.unwrap();
                                }
                            }));
                        }
                        ready.wait().await;
                        let start = Instant::now();
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
