//! The cross-session artifact index (RocksDB backend): "which sessions fetched this
//! sha256?" over 1,000,000 index entries spread across 100,000 sessions (each session
//! fetched 10 artifacts out of a pool of 100,000, so each artifact is in about 10
//! sessions). Target: p99 under 5 ms per query. Prints the p99 of 10,000 queries on
//! top of criterion's figures: once on the live store (the newest entries still in the
//! in-memory index tail), then after reopening it (everything in table files).
//!
//! `cargo bench -p fetchgate-storage --bench artifact_index` (in the storage crate so
//! that a release build of it compiles RocksDB but not the daemon); under `cargo test`
//! it is smoke-run on an index a hundredth of the size.

#[path = "../../benches/common/mod.rs"]
mod common;
mod support;

/// The daemon's allocator (`src/main.rs`), so the bench measures what it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use fetchgate_storage::rocks::RocksStorage;
use fetchgate_storage::{AuditLog, SessionId};

/// Artifacts each session fetched.
const PER_SESSION: u64 = 10;
/// Concurrent appenders filling the index.
const FILLERS: u64 = 256;

/// The sha256 [`common::download`] gives artifact `n`.
fn sha_of(n: u64) -> [u8; 32] {
    let mut sha = [0u8; 32];
    sha[..8].copy_from_slice(&n.to_be_bytes());
    sha
}

fn session(s: u64) -> SessionId {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&s.to_be_bytes());
    SessionId::from_bytes(id)
}

/// The `k`-th artifact of session `s`, out of `pool`.
fn artifact(s: u64, k: u64, pool: u64) -> u64 {
    (s * 7 + k * 9_973) % pool
}

fn bench(c: &mut Criterion) {
    let full = std::env::args().any(|a| a == "--bench");
    let sessions: u64 = if full { 100_000 } else { 1_000 };
    let pool = sessions;
    let (rt, dir, store) = support::runtime_and_store();
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for f in 0..FILLERS {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                for s in (f..sessions).step_by(FILLERS as usize) {
                    for k in 0..PER_SESSION {
                        let record = common::download(artifact(s, k, pool));
                        store.append(session(s), record).await.unwrap();
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    eprintln!(
        "index of {} entries over {sessions} sessions filled in {:?}",
        sessions * PER_SESSION,
        started.elapsed()
    );
    let queries = if full { 10_000 } else { 100 };
    print_percentiles(&rt, &store, queries, pool, "live store");
    // Reopen, so queries read flushed table files as after hours of service.
    drop(store);
    let store = Arc::new(RocksStorage::open(dir.path()).unwrap());

    let mut n = 0u64;
    let mut group = c.benchmark_group("artifact_index");
    group.sample_size(100);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("rocksdb_sessions_with_artifact", |b| {
        b.iter(|| {
            n = (n + 7_919) % pool;
            let found = rt
                .block_on(store.sessions_with_artifact(sha_of(n)))
                .unwrap();
            assert!(!found.is_empty());
            found
        })
    });
    group.finish();
    print_percentiles(&rt, &store, queries, pool, "reopened store");
}

/// Times `queries` sha256 queries one after another and prints their percentiles.
fn print_percentiles(
    rt: &tokio::runtime::Runtime,
    store: &RocksStorage,
    queries: u64,
    pool: u64,
    what: &str,
) {
    let mut times: Vec<Duration> = (0..queries)
        .map(|i| {
            let sha = sha_of((i * 104_729) % pool);
            let start = Instant::now();
            let found = rt.block_on(store.sessions_with_artifact(sha)).unwrap();
            let t = start.elapsed();
            assert!(!found.is_empty());
            t
        })
        .collect();
    times.sort_unstable();
    let p = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    eprintln!(
        "sha256 query, {what}: p50 {:?}, p99 {:?}, max {:?}",
        p(0.5),
        p(0.99),
        p(1.0)
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
