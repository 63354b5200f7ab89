//! Wheel inspection against plain hashing: the same wheel, in the same 64 KiB chunks,
//! through the proxy's streaming digest alone (sha1 + sha256, what every download pays)
//! and through the digest plus the inspector chain (`pip.wheel` spools the wheel, then
//! opens the zip and checks every file against `RECORD`; `default` sniffs), both
//! reporting MB/s of wheel; and through the chain once the wheel's sha256 was verified
//! before (`[proxy] verified-cache-size`: only its sha256 is checked again).
//!
//! `cargo bench --bench wheel_inspect` uses a wheel of about 50 MiB; under `cargo test`
//! (no `--bench` argument) a small one, so the smoke run stays quick.

use std::io::Write;
use std::time::Duration;

use base64::Engine;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fetchgate::audit::digest::BodyHasher;
use fetchgate::inspect::config::Trust;
use fetchgate::inspect::{Inspectors, RequestInfo};
use fetchgate_storage::{Opinion, Policy, SessionHeader, SessionId, Timestamp};
use sha2::Digest;

const CHUNK: usize = 64 << 10;
const INDEX: &str = "https://pypi.example.org:443/simple";
const WHEEL: &str = "fg_bench-1.0-py3-none-any.whl";

/// A wheel of `files` files of `size` bytes each: text-like content (deflate gets
/// about 1.5:1 out of it, as with a mix of Python sources and binaries), a METADATA and
/// a RECORD over all of them.
fn wheel(files: usize, size: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut record = String::new();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let mut add = |zip: &mut zip::ZipWriter<_>, name: &str, data: &[u8]| {
        let digest =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(data));
        record.push_str(&format!("{name},sha256={digest},{}\n", data.len()));
        zip.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(data).unwrap();
    };
    for i in 0..files {
        let data: Vec<u8> = (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b"abcdefghijklmnopqrstuvwxyz _()\n:"[(x % 32) as usize]
            })
            .collect();
        add(&mut zip, &format!("fg_bench/module_{i}.py"), &data);
    }
    add(
        &mut zip,
        "fg_bench-1.0.dist-info/METADATA",
        b"Metadata-Version: 2.1\nName: fg-bench\nVersion: 1.0\n",
    );
    record.push_str("fg_bench-1.0.dist-info/RECORD,,\n");
    zip.start_file(
        "fg_bench-1.0.dist-info/RECORD",
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    zip.write_all(record.as_bytes()).unwrap();
    zip.finish().unwrap().into_inner()
}

fn header() -> SessionHeader {
    SessionHeader::new(
        SessionId::from_bytes([9; 16]),
        [0; 32],
        Policy::Strict,
        Timestamp::now(),
        3600,
    )
}

/// The proxy's digest over the body, chunk by chunk.
fn hash(body: &[u8]) -> BodyHasher {
    let mut h = BodyHasher::default();
    for chunk in body.chunks(CHUNK) {
        h.update(chunk);
    }
    h
}

fn bench(c: &mut Criterion) {
    let full = std::env::args().any(|a| a == "--bench");
    let body = if full {
        wheel(200, 384 << 10)
    } else {
        wheel(8, 16 << 10)
    };
    let spool = tempfile::tempdir().unwrap();
    let trust = Trust {
        pip: vec![INDEX.into()],
        ..Default::default()
    };
    let remembering = Inspectors::new(trust.clone(), spool.path().to_owned(), None, 16);
    let forgetting = Inspectors::new(trust, spool.path().to_owned(), None, 0);
    let headers = http::HeaderMap::new();
    let get = |inspectors: &Inspectors, url: &str| {
        let req = RequestInfo {
            method: "GET",
            url,
            headers: &headers,
        };
        inspectors.begin(&header(), &req)
    };
    // The project page that lists the wheel, as pip fetches it first.
    let wheel_url = format!("{INDEX}/fg-bench/{WHEEL}");
    let page = format!(
        "<a href=\"{WHEEL}#sha256={}\">{WHEEL}</a>",
        hex::encode(sha2::Sha256::digest(&body))
    );
    for inspectors in [&remembering, &forgetting] {
        let mut listing = get(inspectors, &format!("{INDEX}/fg-bench/"));
        listing.chunk(page.as_bytes());
        let verdict = listing.finish(&hash(page.as_bytes()).finish());
        assert_eq!(
            verdict.response.get("pip.simple-index").map(|i| i.opinion),
            Some(Opinion::Approved)
        );
    }
    let download = |inspectors: &Inspectors| {
        let mut inspection = get(inspectors, &wheel_url);
        let mut h = BodyHasher::default();
        for chunk in body.chunks(CHUNK) {
            h.update(chunk);
            inspection.chunk(chunk);
        }
        let verdict = inspection.finish(&h.finish());
        let wheel = verdict
            .response
            .get("pip.wheel")
            .expect("the wheel inspector gave a verdict");
        assert_eq!(wheel.opinion, Opinion::Approved, "{wheel:?}");
        wheel.annotations["record"].clone()
    };
    // The first download verifies the wheel in full; the cache remembers it.
    assert!(download(&remembering).contains("while the wheel streamed"));
    assert!(download(&remembering).contains("first verified"));

    let mut group = c.benchmark_group(format!("wheel_{}KiB", body.len() >> 10));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(if full { 15 } else { 1 }));
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("hash_only", |b| b.iter(|| hash(&body).finish()));
    group.bench_function("hash_and_inspect", |b| b.iter(|| download(&forgetting)));
    group.bench_function("hash_and_inspect_verified_before", |b| {
        b.iter(|| download(&remembering))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
