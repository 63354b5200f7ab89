//! The proxy's per-byte and per-connection costs: the streaming digest (sha1 + sha256
//! over 1 MiB chunks, as response bodies arrive) and leaf-certificate minting versus
//! a cache hit.
//!
//! `cargo bench --bench proxy_hot_paths`

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fetchgate::audit::digest::BodyHasher;
use fetchgate::ca::CertificateAuthority;
use fetchgate::proxy::mitm::CertCache;

const CHUNK: usize = 1 << 20;
const CHUNKS: usize = 64;

fn digest(c: &mut Criterion) {
    let chunk: Vec<u8> = (0..CHUNK).map(|i| (i * 31) as u8).collect();
    let mut group = c.benchmark_group("streaming_digest");
    group.throughput(Throughput::Bytes((CHUNK * CHUNKS) as u64));
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("sha1_sha256_64MiB_in_1MiB_chunks", |b| {
        b.iter(|| {
            let mut h = BodyHasher::default();
            for _ in 0..CHUNKS {
                h.update(&chunk);
            }
            h.finish()
        })
    });
    group.finish();
}

fn certificates(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = CertificateAuthority::load_or_generate(dir.path()).unwrap();
    let cache = Arc::new(CertCache::new(ca, NonZeroUsize::new(1024).unwrap()));
    let mut group = c.benchmark_group("leaf_certificates");
    let mut n = 0u64;
    group.bench_function("mint_ec_p256_leaf_miss", |b| {
        b.iter(|| {
            n += 1;
            cache.leaf(&format!("host-{n}.example.org")).unwrap()
        })
    });
    cache.leaf("cached.example.org").unwrap();
    group.bench_function("cache_hit", |b| {
        b.iter(|| cache.leaf("cached.example.org").unwrap())
    });
    group.finish();
}

criterion_group!(benches, digest, certificates);
criterion_main!(benches);
