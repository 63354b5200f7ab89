//! `GET /metrics` read with a Prometheus text-format parser: every line parses, and the
//! counters, gauges and histograms follow what clients did to the real daemon, whether
//! a test's own requests or a load-test run whose counts the harness keeps itself.

mod common;

use std::time::{Duration, Instant};

use common::DaemonOpts;
use prometheus_parse::{Scrape, Value};
use reqwest::Method;
use serde_json::json;

/// `GET /metrics` on the control port at `control`, parsed.
async fn scrape_at(control: std::net::SocketAddr) -> Scrape {
    let r = reqwest::get(format!("http://{control}/metrics"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.unwrap();
    // The parser skips what it does not understand: make sure every sample line is one
    // it turned into a sample.
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (name, _) = line
            .split_once(['{', ' '])
            .unwrap_or_else(|| panic!("not a sample line: {line:?}"));
        assert!(
            name.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':'),
            "bad metric name in {line:?}"
        );
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "bad value in {line:?}");
    }
    let scrape =
        Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text format");
    // ... and that it dropped none: every line but a histogram bucket is a sample of its
    // own (buckets fold into their histogram's sample).
    let lines = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|l| {
            !l.split(['{', ' '])
                .next()
                .is_some_and(|n| n.ends_with("_bucket"))
        })
        .count();
    let samples = scrape
        .samples
        .iter()
        .filter(|x| !matches!(x.value, Value::Histogram(_)))
        .count();
    assert_eq!(
        samples, lines,
        "the parser dropped sample lines of:\n{text}"
    );
    scrape
}

async fn scrape(d: &common::Daemon) -> Scrape {
    scrape_at(([127, 0, 0, 1], d.opts.control_port).into()).await
}

/// The value of a counter, gauge or untyped sample whose labels include `labels`.
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .find_map(|x| match x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
            _ => None,
        })
}

/// The number of observations of a histogram (its `+Inf` bucket), checked against `_count`.
fn observations(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let buckets = s.samples.iter().find_map(|x| match &x.value {
        Value::Histogram(b)
            if x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)) =>
        {
            Some(b.clone())
        }
        _ => None,
    })?;
    let inf = buckets
        .iter()
        .find(|b| b.less_than.is_infinite())
        .expect("a +Inf bucket")
        .count;
    assert!(
        buckets.windows(2).all(|w| w[0].count <= w[1].count),
        "buckets are cumulative"
    );
    assert_eq!(
        value(s, &format!("{name}_count"), labels),
        Some(inf),
        "{name}: +Inf bucket and _count agree"
    );
    Some(inf)
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_count_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let d = DaemonOpts::new(dir.path()).start().await;
    let before = scrape(&d).await;
    assert_eq!(
        value(&before, "fetchgate_sessions_created_total", &[]),
        None,
        "nothing counted before anything happened"
    );

    let (first, first_token) = d.create(json!({})).await;
    let (second, second_token) = d.create(json!({"timeout": 60})).await;
    let r = d
        .client
        .get(d.url("/sessions"))
        .basic_auth("craft", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // No credentials: refused at the auth stage, nothing recorded.
    assert_eq!(d.proxy_get("http://127.0.0.1:9/x", None).await, 407);
    // Valid credentials, to a port nobody serves: refused or failed, and recorded
    // either way.
    let status = d
        .proxy_get(
            &format!("http://127.0.0.1:{}/x", common::free_port()),
            Some((&second, &second_token)),
        )
        .await;
    assert!(matches!(status, 403 | 502), "{status}");
    assert_eq!(d.revoke(&first, &first_token).await.status(), 200);
    let r = d
        .authed(Method::DELETE, &format!("/session/{first}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let s = scrape(&d).await;
    let v = |name, labels: &[(&str, &str)]| value(&s, name, labels);
    assert_eq!(
        v("fetchgate_sessions_created_total", &[("policy", "strict")]),
        Some(2.0)
    );
    assert_eq!(
        v("fetchgate_sessions_ended_total", &[("reason", "ended")]),
        Some(1.0)
    );
    assert_eq!(v("fetchgate_sessions", &[("state", "active")]), Some(1.0));
    assert_eq!(v("fetchgate_sessions", &[("state", "ended")]), Some(1.0));
    assert_eq!(v("fetchgate_sessions", &[("state", "revoked")]), Some(0.0));
    assert_eq!(v("fetchgate_control_auth_failures_total", &[]), Some(1.0));
    assert_eq!(
        v(
            "fetchgate_control_requests_total",
            &[("route", "/session"), ("status", "200")]
        ),
        Some(2.0)
    );
    assert_eq!(v("fetchgate_proxy_requests_total", &[]), Some(2.0));
    assert_eq!(
        v("fetchgate_proxy_denied_total", &[("stage", "auth")]),
        Some(1.0)
    );
    let class = if status == 403 { "4xx" } else { "5xx" };
    let requests_4xx = observations(
        &s,
        "fetchgate_proxy_request_duration_seconds",
        &[("status", "4xx")],
    );
    let requests_5xx = observations(
        &s,
        "fetchgate_proxy_request_duration_seconds",
        &[("status", "5xx")],
    );
    assert_eq!(
        requests_4xx.unwrap_or(0.0) + requests_5xx.unwrap_or(0.0),
        2.0,
        "both proxy requests timed (the second answered {class})"
    );
    // One audit record (the second request), written by at least one group commit.
    assert_eq!(v("fetchgate_audit_records_total", &[]), Some(1.0));
    let commits = observations(&s, "fetchgate_audit_commit_duration_seconds", &[]).unwrap();
    assert!(commits >= 1.0, "{commits}");
    assert!(v("fetchgate_audit_queue_depth", &[]).is_some());

    // Connections are counted while open and released when closed.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let open = value(&scrape(&d).await, "fetchgate_proxy_connections_open", &[]);
        if open == Some(0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "open connections stay at {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Upstream host names are resolved once and then answered from the cache; IP literals
/// are never looked up, and neither is a host a strict session refuses by policy. The
/// requests go to a port nobody serves: resolving comes first whatever the ACL or the
/// connection then make of them.
#[tokio::test]
async fn upstream_host_names_are_looked_up_once_then_cached() {
    let dir = tempfile::tempdir().unwrap();
    let d = DaemonOpts::new(dir.path())
        .arg("--permissive-mode")
        .start()
        .await;
    let port = common::free_port();
    let lookups = |s: &Scrape, result| {
        value(s, "fetchgate_dns_lookups_total", &[("result", result)]).unwrap_or(0.0)
    };

    let (id, token) = d.create(json!({"policy": "strict"})).await;
    let url = format!("http://localhost:{port}/x");
    assert_eq!(d.proxy_get(&url, Some((&id, &token))).await, 403);
    let report = d.report(&id, &token).await;
    assert_eq!(report["denied"][0]["stage"], "policy", "{report:#}");
    let s = scrape(&d).await;
    assert_eq!((lookups(&s, "miss"), lookups(&s, "hit")), (0.0, 0.0));

    let (id, token) = d.create(json!({"policy": "permissive"})).await;
    for host in ["localhost", "LOCALHOST", "127.0.0.1", "localhost"] {
        let status = d
            .proxy_get(&format!("http://{host}:{port}/x"), Some((&id, &token)))
            .await;
        assert!(matches!(status, 403 | 502), "{host}: {status}");
    }
    let s = scrape(&d).await;
    assert_eq!((lookups(&s, "miss"), lookups(&s, "hit")), (1.0, 2.0));
}

/// A short load-test run (complete sessions over plain HTTP and intercepted HTTPS,
/// revoked, reported, verified and ended), then the daemon's counters against the
/// harness's own counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_load_test_run_the_counters_match_the_harness_counts() {
    use fetchgate_loadtest::client::{ConnMode, Route};
    use fetchgate_loadtest::harness::Harness;
    use fetchgate_loadtest::origin::OriginBehaviour;
    use fetchgate_loadtest::stats::Live;
    use fetchgate_loadtest::target::TargetSpec;
    use fetchgate_loadtest::workload::{Mix, SchemeMix, Workload, run_and_summarise};
    use std::sync::Arc;

    let spec = TargetSpec::Spawn {
        binary: env!("CARGO_BIN_EXE_fetchgate").into(),
        extra_args: vec![],
    };
    let h = Arc::new(
        Harness::start(&spec, OriginBehaviour::default(), None)
            .await
            .unwrap_or_else(|e| panic!("harness: {e}")),
    );
    let w = Arc::new(Workload {
        builders: 3,
        duration: Duration::from_secs(60),
        max_sessions: Some(5),
        requests_per_session: 7,
        mix: Mix::synthetic(&[(1024, 3), (200_000, 1)], 4),
        session_trust: None,
        scheme: SchemeMix::Mixed,
        connection: ConnMode::KeepAlive,
        hash_bodies: true,
        policy: "permissive".into(),
        request_timeout: Duration::from_secs(30),
        completions: None,
    });
    let run = run_and_summarise(h.clone(), w, Arc::new(Live::default()), "metrics").await;
    assert_eq!(run.error_total, 0, "{:?}", run.error_examples);
    assert_eq!(run.report_verification_failures, 0);
    assert_eq!((run.sessions, run.requests), (5, 35));

    // One more request, with a body: the harness only sends GETs. The origin refuses it
    // without a 2xx, so it is neither a 2xx nor a download the inspectors judge.
    let control = h.target.control().expect("a spawned fetchgate");
    let extra = control.create_session("permissive", None).await.unwrap();
    let Route::Proxy { addr, .. } = h.target.route(None) else {
        panic!("a spawned fetchgate is a proxy");
    };
    let proxy = reqwest::Proxy::http(format!("http://{addr}"))
        .unwrap()
        .basic_auth(&extra.id, &extra.token);
    let client = reqwest::Client::builder().proxy(proxy).build().unwrap();
    let posted = client
        .post(format!("http://{}/upload", h.origin.http_addr()))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert!(!posted.status().is_success(), "{}", posted.status());
    let answer_bytes = posted.bytes().await.unwrap().len() as f64;

    let s = scrape_at(control.addr()).await;
    let v = |name, labels: &[(&str, &str)]| value(&s, name, labels).unwrap_or(0.0);
    let requests = run.requests as f64;
    let sessions = run.sessions as f64;
    assert_eq!(
        v(
            "fetchgate_sessions_created_total",
            &[("policy", "permissive")]
        ),
        sessions + 1.0
    );
    assert_eq!(
        v("fetchgate_sessions_ended_total", &[("reason", "ended")]),
        sessions
    );
    assert_eq!(v("fetchgate_sessions", &[("state", "ended")]), sessions);
    assert_eq!(v("fetchgate_sessions", &[("state", "active")]), 1.0);
    assert_eq!(v("fetchgate_proxy_requests_total", &[]), requests + 1.0);
    assert_eq!(v("fetchgate_audit_records_total", &[]), requests + 1.0);
    assert_eq!(
        v("fetchgate_proxy_bytes_down_total", &[]),
        run.bytes as f64 + answer_bytes
    );
    assert_eq!(v("fetchgate_proxy_bytes_up_total", &[]), 4096.0);
    assert_eq!(
        observations(
            &s,
            "fetchgate_proxy_request_duration_seconds",
            &[("status", "2xx")]
        ),
        Some(requests)
    );
    assert_eq!(
        observations(&s, "fetchgate_upstream_response_seconds", &[]),
        Some(requests + 1.0)
    );
    // Every download was judged (permissive: passed whatever the verdict).
    assert_eq!(
        observations(&s, "fetchgate_inspection_seconds", &[]),
        Some(requests)
    );
    let judged = |result| {
        v(
            "fetchgate_inspected_downloads_total",
            &[("result", result), ("action", "passed")],
        )
    };
    assert_eq!(judged("approved") + judged("rejected"), requests);
    assert_eq!(v("fetchgate_proxy_denied_total", &[("stage", "auth")]), 0.0);
    assert_eq!(v("fetchgate_control_auth_failures_total", &[]), 0.0);
    for (route, method, count) in [
        ("/session", "create", sessions + 1.0),
        ("/session/:id/token", "revoke", sessions),
        ("/resources/:id", "delete resources", sessions),
    ] {
        assert_eq!(
            v(
                "fetchgate_control_requests_total",
                &[("route", route), ("status", "200")]
            ),
            count,
            "{method}"
        );
    }
    if let Ok(h) = Arc::try_unwrap(h) {
        h.stop();
    }
}
