//! Debtags: parse a generated Packages file of 60,000 stanzas (the size of a large
//! Ubuntu component), plain and `.xz`, reporting MB/s; and the latency of a cold
//! (parse) and a warm (cached) lookup of the whole component.
//!
//! `cargo bench --bench debtags_parse`. Under `cargo test` (no `--bench` argument) the
//! input is 600 stanzas so the smoke run stays quick. Set `DEBTAGS_BENCH_KEEP=DIR` to
//! keep the generated archive (for timing python-debian and the CLI on the same file).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use fetchgate::debtags::cache::{PackagesCache, parse_packages};

/// A Packages file with `n` realistic stanzas (about 1 kB each, most with tags,
/// brace groups and continuation lines).
fn packages(n: usize) -> String {
    let mut s = String::with_capacity(n * 1100);
    for i in 0..n {
        let _ = write!(
            s,
            "Package: pkg-{i}\nArchitecture: amd64\nVersion: 1.{i}-1ubuntu1\nPriority: optional\n\
             Section: utils\nOrigin: Ubuntu\nMaintainer: Ubuntu Developers <ubuntu-devel-discuss@lists.ubuntu.com>\n\
             Installed-Size: {}\nDepends: libc6 (>= 2.34), libfoo{} (>= 1.2), zlib1g (>= 1:1.2.0)\n\
             Filename: pool/main/p/pkg-{i}/pkg-{i}_1.{i}-1ubuntu1_amd64.deb\nSize: {}\n\
             MD5sum: 0123456789abcdef0123456789abcdef\n\
             SHA256: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n\
             Description: a generated package number {i}\n This is the long description of the package.\n .\n \
             It spans several lines, as real descriptions do.\n",
            100 + i % 977,
            i % 7,
            4000 + i,
        );
        if i % 5 != 0 {
            let _ = write!(
                s,
                "Tag: implemented-in::c, interface::commandline, role::{{program,shared-lib}},\n \
                 scope::utility, use::{{editing,viewing}}, works-with::text\n"
            );
        }
        s.push('\n');
    }
    s
}

fn bench(c: &mut Criterion) {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 60_000 } else { 600 };
    let keep = std::env::var_os("DEBTAGS_BENCH_KEEP");
    let tmp = tempfile::tempdir().unwrap();
    let root = keep.as_deref().map(Path::new).unwrap_or(tmp.path());
    let dir = root.join("dists/noble/main/binary-amd64");
    std::fs::create_dir_all(&dir).unwrap();
    let text = packages(n);
    let plain = dir.join("Packages");
    std::fs::write(&plain, &text).unwrap();
    let xz_dir = root.join("xz/dists/noble/main/binary-amd64");
    std::fs::create_dir_all(&xz_dir).unwrap();
    let xz = xz_dir.join("Packages.xz");
    let out = std::process::Command::new("xz")
        .args(["-6", "-c"])
        .arg(&plain)
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(&xz, out.stdout).unwrap();

    let mut group = c.benchmark_group(format!("debtags_packages_{n}_stanzas"));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(if full { 10 } else { 1 }));
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("parse_plain", |b| {
        b.iter(|| assert_eq!(parse_packages(&plain).unwrap().len(), n * 4 / 5))
    });
    group.bench_function("parse_xz", |b| {
        b.iter(|| assert_eq!(parse_packages(&xz).unwrap().len(), n * 4 / 5))
    });
    group.finish();

    let mut group = c.benchmark_group(format!("debtags_lookup_{n}_stanzas"));
    group.sample_size(10);
    group.bench_function("cold", |b| {
        b.iter_batched(
            PackagesCache::new,
            |cache| cache.lookup(root, "noble", "main", None).unwrap().unwrap(),
            BatchSize::PerIteration,
        )
    });
    let warm = PackagesCache::new();
    warm.lookup(root, "noble", "main", None).unwrap().unwrap();
    group.bench_function("warm", |b| {
        b.iter(|| warm.lookup(root, "noble", "main", None).unwrap().unwrap())
    });
    group.finish();
    assert_eq!(warm.parse_count(), 1, "a warm lookup never parses");
}

criterion_group!(benches, bench);
criterion_main!(benches);
