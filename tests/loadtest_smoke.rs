//! The load-test harness driving the real daemon for a few seconds: complete sessions
//! over plain HTTP and intercepted HTTPS, with keep-alive and with Launchpad's
//! connection-per-request forwarder, end with reports that list exactly what was
//! fetched; the report check is not vacuous: a tampered report fails it; and the idle
//! scenario holds its connections open and reads the proxy's memory.

mod common;

use std::sync::Arc;
use std::time::Duration;

use fetchgate_loadtest::client::ConnMode;
use fetchgate_loadtest::content::{Rng, index_pages, load_files};
use fetchgate_loadtest::harness::Harness;
use fetchgate_loadtest::origin::OriginBehaviour;
use fetchgate_loadtest::stats::{Live, Recorder};
use fetchgate_loadtest::target::TargetSpec;
use fetchgate_loadtest::verify::{Mismatch, Outcome, verify};
use fetchgate_loadtest::workload::{self, Catalogue, Mix, SchemeMix, Workload, run_and_summarise};

fn daemon() -> TargetSpec {
    TargetSpec::Spawn {
        binary: env!("CARGO_BIN_EXE_fetchgate").into(),
        extra_args: vec![],
    }
}

fn workload(scheme: SchemeMix, connection: ConnMode) -> Workload {
    Workload {
        builders: 3,
        duration: Duration::from_secs(60),
        max_sessions: Some(4),
        requests_per_session: 6,
        mix: Mix::synthetic(&[(1024, 3), (300_000, 1)], 3),
        session_trust: None,
        scheme,
        connection,
        hash_bodies: true,
        policy: "permissive".into(),
        request_timeout: Duration::from_secs(30),
        completions: None,
    }
}

async fn harness(behaviour: OriginBehaviour) -> Harness {
    match Harness::start(&daemon(), behaviour, None).await {
        Ok(h) => h,
        Err(e) => panic!("harness: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_over_http_and_https_verify_with_keep_alive_and_per_request_connections() {
    let h = Arc::new(harness(OriginBehaviour::default()).await);
    for scheme in [SchemeMix::Http, SchemeMix::Https] {
        for connection in [ConnMode::KeepAlive, ConnMode::PerRequest] {
            let w = Arc::new(workload(scheme, connection));
            let label = format!("{scheme:?} {connection:?}");
            let s = run_and_summarise(h.clone(), w, Arc::new(Live::default()), &label).await;
            assert_eq!(s.error_total, 0, "{label}: {:?}", s.error_examples);
            assert_eq!(s.report_verification_failures, 0, "{label}");
            assert_eq!(s.sessions, 4, "{label}");
            assert_eq!(s.requests, 4 * 6, "{label}");
            assert!(s.bytes >= 4 * 6 * 1024, "{label}: {} bytes", s.bytes);
            let proxy = s.proxy.unwrap_or_else(|| panic!("{label}: no proxy usage"));
            assert!(proxy.peak_rss_kib > 1024, "{label}: {proxy:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_errors_are_counted_and_their_statuses_verified_in_the_report() {
    let h = Arc::new(
        harness(OriginBehaviour {
            error_rate: 1.0,
            ..OriginBehaviour::default()
        })
        .await,
    );
    let w = Arc::new(workload(SchemeMix::Mixed, ConnMode::KeepAlive));
    let s = run_and_summarise(h, w, Arc::new(Live::default()), "errors").await;
    assert_eq!(s.report_verification_failures, 0, "{:?}", s.error_examples);
    assert_eq!(s.sessions, 4);
    assert_eq!(s.error_total, 4 * 6, "{:?}", s.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_report_fails_verification() {
    let h = harness(OriginBehaviour::default()).await;
    let w = workload(SchemeMix::Mixed, ConnMode::KeepAlive);
    let catalogue = Catalogue::new(&w.mix);
    let mut rec = Recorder::new(Arc::new(Live::default()));
    let outcome = workload::run_session(&h, &w, &catalogue, &mut Rng::new(7), &mut rec).await;
    let report = outcome
        .report
        .expect("the daemon answered every control step");
    let expected = outcome.expected;
    assert_eq!(expected.len(), 6);
    assert!(
        expected
            .iter()
            .all(|e| matches!(e.outcome, Outcome::Body { .. }))
    );
    assert_eq!(verify(&expected, &report), Ok(()));

    // Each tampered copy is the real report changed in one place.
    let report: serde_json::Value = serde_json::from_slice(&report).unwrap();
    let tampered = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut r = report.clone();
        change(&mut r);
        verify(&expected, r.to_string().as_bytes())
    };
    assert!(matches!(
        tampered(&|r| r["artifacts"][0]["metadata"]["sha256"] = "00".repeat(32).into()),
        Err(Mismatch::Digest { .. })
    ));
    assert!(matches!(
        tampered(&|r| r["artifacts"][0]["metadata"]["size"] = 1.into()),
        Err(Mismatch::Digest { .. })
    ));
    assert!(matches!(
        tampered(&|r| {
            if let Some(a) = r["artifacts"].as_array_mut() {
                a.remove(0);
            }
        }),
        Err(Mismatch::Missing { .. })
    ));
    assert!(matches!(
        tampered(&|r| {
            let first = r["artifacts"][0]["downloads"][0].clone();
            if let Some(d) = r["artifacts"][0]["downloads"].as_array_mut() {
                d.push(first);
            }
        }),
        Err(Mismatch::Unexpected { .. })
    ));
    h.stop();
}

/// A small `.deb` (with a DEP-5 copyright file) and a wheel, in `dir/files`.
fn package_files(dir: &std::path::Path) -> std::path::PathBuf {
    let root = dir.join("root");
    let doc = root.join("usr/share/doc/fg-load");
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(&doc).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        "Package: fg-load\nVersion: 2.1-1\nArchitecture: all\nMaintainer: Jo Tester <jo@example.org>\nDescription: a package for the load test\n",
    )
    .unwrap();
    std::fs::write(
        doc.join("copyright"),
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nCopyright: 2026 Jo Tester\nLicense: MIT\n",
    )
    .unwrap();
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    common::run(
        std::process::Command::new("dpkg-deb")
            .args(["-Zxz", "--root-owner-group", "--build"])
            .arg(&root)
            .arg(files.join("fg-load_2.1-1_all.deb")),
    );
    let code = "print('load test')\n".repeat(5_000);
    let wheel = fetchgate_formats::testing::wheel(
        "fg_load-3.0.dist-info",
        &[
            ("fg_load/__init__.py", code.as_bytes()),
            (
                "fg_load-3.0.dist-info/METADATA",
                b"Metadata-Version: 2.1\nName: fg-load\nVersion: 3.0\nLicense: MIT\n",
            ),
        ],
    );
    std::fs::write(files.join("fg_load-3.0-py3-none-any.whl"), wheel).unwrap();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_package_files_are_inspected_when_trusted_and_only_hashed_when_not() {
    let dir = tempfile::tempdir().unwrap();
    let files = load_files(&package_files(dir.path())).unwrap();
    let repo = fetchgate_loadtest::apt_repo::build(&files).unwrap();
    let pages = index_pages(&files);
    assert_eq!(pages.len(), 1, "one project page, for the wheel");
    // InRelease, Packages, then the project page.
    let first: Vec<_> = repo.files.iter().chain(&pages).cloned().collect();
    for trusted in [true, false] {
        let h = harness(OriginBehaviour {
            files: files.iter().chain(&first).cloned().collect(),
            ..OriginBehaviour::default()
        })
        .await;
        let w = Workload {
            mix: Mix::Files {
                files: files.clone(),
                first: if trusted { first.clone() } else { vec![] },
            },
            session_trust: trusted.then(|| h.trust_origin(&repo.key)),
            ..workload(SchemeMix::Mixed, ConnMode::KeepAlive)
        };
        let catalogue = Catalogue::new(&w.mix);
        let mut rec = Recorder::new(Arc::new(Live::default()));
        let outcome = workload::run_session(&h, &w, &catalogue, &mut Rng::new(3), &mut rec).await;
        let report = outcome.report.expect("every control step worked");
        assert_eq!(
            verify(&outcome.expected, &report),
            Ok(()),
            "trusted: {trusted}"
        );
        let report: serde_json::Value = serde_json::from_slice(&report).unwrap();
        // The index files come first, once per scheme.
        assert_eq!(outcome.expected.len(), 6 + 6 * usize::from(trusted));
        let deb = common::artifact(&report, ".deb");
        let whl = common::artifact(&report, ".whl");
        if trusted {
            for index in ["/InRelease", "/Packages"] {
                let file = common::artifact(&report, index);
                assert_eq!(file["result"], "Approved", "{file:#}");
            }
            // Listed by the signed repository's index: verified, and read.
            assert_eq!(deb["result"], "Approved", "{deb:#}");
            assert_eq!(deb["metadata"]["name"], "fg-load", "{deb:#}");
            assert_eq!(deb["metadata"]["version"], "2.1-1", "{deb:#}");
            assert_eq!(deb["metadata"]["architecture"], "all", "{deb:#}");
            assert_eq!(deb["metadata"]["license"], "MIT", "{deb:#}");
            assert_eq!(whl["result"], "Approved", "{whl:#}");
            assert_eq!(whl["metadata"]["name"], "fg-load", "{whl:#}");
            assert_eq!(whl["metadata"]["version"], "3.0", "{whl:#}");
            assert_eq!(
                whl["response-inspection"]["pip.wheel"]["annotations"]["record"],
                "2 files checked, 2 of them while the wheel streamed",
                "{whl:#}"
            );
        } else {
            assert_eq!(deb["request-inspection"]["deb"]["opinion"], "Unknown");
            assert_eq!(whl["request-inspection"]["pip.wheel"]["opinion"], "Unknown");
            assert!(whl["metadata"].get("name").is_none(), "{whl:#}");
        }
        h.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_plain_and_intercepted_are_held_open_and_measured() {
    let h = harness(OriginBehaviour::default()).await;
    for tls in [false, true] {
        let s = fetchgate_loadtest::idle::run(&h, 20, tls, "permissive", "idle").await;
        assert!(s.errors.is_empty(), "tls {tls}: {:?}", s.errors);
        assert_eq!(s.established, 20, "tls {tls}");
        // All three readings of the proxy's memory were taken, once settled.
        for reading in [s.rss_before_kib, s.rss_after_kib, s.rss_after_second_kib] {
            assert!(reading.is_some_and(|kib| kib > 1024), "tls {tls}: {s:?}");
        }
        assert!(s.kib_per_connection.is_some(), "tls {tls}");
        assert!(s.kib_per_added_connection.is_some(), "tls {tls}");
    }
    h.stop();
}
