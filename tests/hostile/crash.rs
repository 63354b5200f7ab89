//! The daemon killed with `kill -9` in the middle of heavy load, then started again on
//! the same spool: every download a builder received whole before the kill is in its
//! session's report, with the content's sha256 and size. The count is taken against
//! the load-test harness's own log of completed downloads (`--completions`), not
//! against anything the daemon says. (A download reaches the builder's last byte only
//! once its audit record is durable; this is the test of that promise.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fetchgate_loadtest::client::ConnMode;
use fetchgate_loadtest::completions::{self, CompletionLog};
use fetchgate_loadtest::harness::Harness;
use fetchgate_loadtest::origin::OriginBehaviour;
use fetchgate_loadtest::stats::Live;
use fetchgate_loadtest::target::TargetSpec;
use fetchgate_loadtest::tls::OriginPki;
use fetchgate_loadtest::verify::verify_included;
use fetchgate_loadtest::workload::{self, Mix, SchemeMix, Workload};
use reqwest::Method;

use super::common::AUTH;
use super::{Origin, assert_healthy, daemon_opts_with};

/// Downloads the builders must have seen complete before the kill: enough that the
/// kill lands in the middle of heavy traffic.
const BEFORE_KILL: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_download_a_builder_saw_complete() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("origin-ca");
    let pki = OriginPki::load_or_generate(&ca_dir).unwrap();
    let opts = daemon_opts_with(
        dir.path(),
        &format!("upstream-ca-file = \"{}\"\n", pki.ca_cert_path().display()),
    );
    let d = opts.start().await;
    let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let spec = TargetSpec::Fetchgate {
        proxy: local(d.opts.proxy_port),
        control: local(d.opts.control_port),
        user: AUTH.0.into(),
        password: AUTH.1.into(),
        ca: d.ca_file(),
        pids: vec![],
    };
    let harness = Harness::start(&spec, OriginBehaviour::default(), Some(&ca_dir))
        .await
        .unwrap_or_else(|e| panic!("harness: {e}"));
    let log_path = dir.path().join("completions.jsonl");
    let workload = Workload {
        builders: 32,
        // Builders stop starting sessions after this; the kill comes well before.
        duration: Duration::from_secs(4),
        max_sessions: None,
        requests_per_session: 16,
        mix: Mix::synthetic(&[(1024, 4), (128 * 1024, 1)], 8),
        session_trust: None,
        scheme: SchemeMix::Mixed,
        connection: ConnMode::KeepAlive,
        hash_bodies: true,
        policy: "permissive".into(),
        request_timeout: Duration::from_secs(10),
        completions: Some(Arc::new(CompletionLog::create(&log_path).unwrap())),
    };
    let load = tokio::spawn(workload::run(
        Arc::new(harness),
        Arc::new(workload),
        Arc::new(Live::default()),
    ));

    let deadline = Instant::now() + Duration::from_secs(30);
    let completed = || {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .lines()
            .count()
    };
    while completed() < BEFORE_KILL {
        assert!(
            Instant::now() < deadline,
            "only {} downloads completed in 30 s; log:\n{}",
            completed(),
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!load.is_finished(), "the load ended before the kill");
    let opts = d.kill9();
    // The builders' requests fail from here on; they give up at the run's end.
    load.await.unwrap();

    let d = opts.start().await;
    let by_session = completions::read(&log_path).unwrap();
    let acknowledged: usize = by_session.values().map(Vec::len).sum();
    assert!(acknowledged >= BEFORE_KILL, "{acknowledged}");
    for (session, done) in &by_session {
        let session = session
            .as_deref()
            .expect("every completion names its session");
        // Active, revoked or already ended when the daemon died: end it (404 if it was),
        // then read its final report.
        let end = d
            .authed(Method::DELETE, &format!("/session/{session}"))
            .send()
            .await
            .unwrap();
        assert!(matches!(end.status().as_u16(), 200 | 404), "{end:?}");
        let r = d
            .authed(Method::GET, &format!("/reports/{session}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "report of {session}");
        let report = r.bytes().await.unwrap();
        let expected: Vec<_> = done.iter().map(|c| c.expected().unwrap()).collect();
        if let Err(e) = verify_included(&expected, &report) {
            panic!(
                "session {session}: a download acknowledged before kill -9 is lost: {e}\n{}",
                String::from_utf8_lossy(&report)
            );
        }
    }
    assert_healthy(&d, &Origin::start().await).await;
}
