//! Provenance against the real binary: which sessions fetched an artifact, sessions
//! listed by owner, label and time, session webhooks, and retention.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Daemon, DaemonOpts, Origin};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// An origin serving `a.bin` and `b.bin` (different contents) from `dir`.
fn origin(dir: &std::path::Path) -> (Origin, String, String) {
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(
        files.join("a.bin"),
        b"the same artifact, fetched three times",
    )
    .unwrap();
    std::fs::write(files.join("b.bin"), b"another version of it").unwrap();
    let sha = |name: &str| hex::encode(Sha256::digest(std::fs::read(files.join(name)).unwrap()));
    let (a, b) = (sha("a.bin"), sha("b.bin"));
    (Origin::start(&files, None), a, b)
}

async fn status_of(d: &Daemon, path: &str) -> (u16, Value) {
    let r = d.authed(Method::GET, path).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn ids(page: &Value) -> Vec<String> {
    page["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["session-id"].as_str().unwrap().to_owned())
        .collect()
}

/// Polls `check` every 100 ms until it holds or `limit` passes.
async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn artifact_queries_name_every_session_newest_first_in_pages() {
    let dir = tempfile::tempdir().unwrap();
    let (origin, sha_a, sha_b) = origin(dir.path());
    let d = DaemonOpts::new(dir.path())
        .arg("--permissive-mode")
        .start()
        .await;
    let mut sessions = Vec::new();
    for n in 0..4 {
        let (id, token) = d
            .create(json!({"policy": "permissive", "owner": format!("farm-{n}"),
                "labels": {"build": format!("b{n}"), "arch": "amd64"}}))
            .await;
        let file = if n < 3 { "a.bin" } else { "b.bin" };
        let url = format!("{}{file}", origin.base());
        assert_eq!(d.proxy_get(&url, Some((&id, &token))).await, 200);
        sessions.push((id, token));
        // Distinct start times, so "newest first" is one order.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let (status, page) = status_of(&d, &format!("/artifacts?sha256={sha_a}")).await;
    assert_eq!(status, 200, "{page}");
    let newest_first: Vec<String> = sessions[..3].iter().rev().map(|s| s.0.clone()).collect();
    assert_eq!(ids(&page), newest_first);
    assert_eq!(page["next"], Value::Null);
    let row = &page["sessions"][0];
    assert_eq!(row["owner"], "farm-2");
    assert_eq!(row["labels"], json!({"build": "b2", "arch": "amd64"}));
    assert_eq!(row["policy"], "permissive");
    assert_eq!(row["state"], "active");
    assert_eq!(row["sha256"], sha_a.as_str());

    // The result is the one the session's report gives the artifact.
    let (id2, token2) = &sessions[2];
    assert_eq!(d.revoke(id2, token2).await.status(), 200);
    let (_, report) = status_of(&d, &format!("/session/{id2}")).await;
    assert_eq!(report["owner"], "farm-2");
    assert_eq!(report["labels"]["build"], "b2");
    let result = &report["artifacts"][0]["result"];
    assert!(result == "Approved" || result == "Rejected", "{report}");
    let (_, page) = status_of(&d, &format!("/artifacts?sha256={sha_a}")).await;
    assert_eq!(&page["sessions"][0]["result"], result);
    assert_eq!(page["sessions"][0]["state"], "revoked");

    // Pages of two: the three sessions, in order, then no cursor.
    let (_, first) = status_of(&d, &format!("/artifacts?sha256={sha_a}&limit=2")).await;
    assert_eq!(ids(&first), newest_first[..2]);
    let cursor = first["next"].as_str().expect("a second page");
    let (_, second) = status_of(
        &d,
        &format!("/artifacts?sha256={sha_a}&limit=2&cursor={cursor}"),
    )
    .await;
    assert_eq!(ids(&second), newest_first[2..]);
    assert_eq!(second["next"], Value::Null);

    let (_, other) = status_of(&d, &format!("/artifacts?sha256={sha_b}")).await;
    assert_eq!(ids(&other), [sessions[3].0.clone()]);
    let unknown = "0".repeat(64);
    let (_, none) = status_of(&d, &format!("/artifacts?sha256={unknown}")).await;
    assert_eq!(ids(&none), Vec::<String>::new());
    // The default inspector names nothing: a name query finds none of these.
    let (status, none) = status_of(&d, "/artifacts?name=a.bin&version=1").await;
    assert_eq!((status, ids(&none).len()), (200, 0));

    for bad in [
        "/artifacts",
        "/artifacts?sha256=xyz",
        &format!("/artifacts?sha256={}", sha_a.to_uppercase()),
        &format!("/artifacts?sha256={sha_a}&name=x&version=1"),
        "/artifacts?name=x",
        "/artifacts?version=1",
        &format!("/artifacts?sha256={sha_a}&limit=0"),
        &format!("/artifacts?sha256={sha_a}&cursor=nonsense"),
    ] {
        let (status, body) = status_of(&d, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].is_string(), "{bad}: {body}");
    }
    let r = d
        .anon(Method::GET, &format!("/artifacts?sha256={sha_a}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn sessions_are_listed_by_owner_label_and_start_time() {
    let dir = tempfile::tempdir().unwrap();
    let d = DaemonOpts::new(dir.path()).start().await;
    let (a, _) = d
        .create(json!({"owner": "rebuilds", "labels": {"arch": "amd64"}}))
        .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let between = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (b, _) = d
        .create(json!({"owner": "rebuilds", "labels": {"arch": "arm64"}}))
        .await;
    let (c, _) = d.create(json!({"labels": {"arch": "amd64"}})).await;
    let (u, _) = d.create(json!({})).await;

    let list = |q: String| {
        let d = &d;
        async move {
            let (status, page) = status_of(d, &format!("/sessions?{q}")).await;
            assert_eq!(status, 200, "{q}: {page}");
            ids(&page)
        }
    };
    assert_eq!(list("owner=rebuilds".into()).await, [b.clone(), a.clone()]);
    assert_eq!(
        list("label=arch=amd64".into()).await,
        [c.clone(), a.clone()]
    );
    assert_eq!(
        list("owner=rebuilds&label=arch=arm64".into()).await,
        std::slice::from_ref(&b)
    );
    let since = between.replace('+', "%2B");
    assert_eq!(
        list(format!("since={since}")).await,
        [u.clone(), c.clone(), b.clone()]
    );
    assert_eq!(
        list(format!("until={since}")).await,
        std::slice::from_ref(&a)
    );
    let (_, page) = status_of(&d, "/sessions?owner=rebuilds").await;
    assert_eq!(page["sessions"][0]["labels"], json!({"arch": "arm64"}));
    let (_, page) = status_of(&d, "/sessions?state=active&limit=10").await;
    assert_eq!(page["sessions"][0]["owner"], Value::Null);

    for bad in [
        "label=arch",
        "since=yesterday",
        "until=2026-13-01T00:00:00Z",
    ] {
        let (status, body) = status_of(&d, &format!("/sessions?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].is_string());
    }
    let too_many: serde_json::Map<String, Value> =
        (0..33).map(|i| (format!("k{i}"), json!("v"))).collect();
    for (body, why) in [
        (json!({"owner": ""}), "owner"),
        (json!({"owner": "x".repeat(129)}), "owner"),
        (json!({"owner": "a\nb"}), "control"),
        (json!({"labels": {"a b": "x"}}), "label key"),
        (json!({"labels": {"k": "v".repeat(257)}}), "label"),
        (json!({"labels": too_many}), "at most 32 labels"),
        (json!({"labels": {"k": 1}}), ""),
        (json!({"labels": ["k"]}), ""),
        (json!({"owner": 7}), ""),
    ] {
        let r = d
            .authed(Method::POST, "/session")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.unwrap();
        assert!(e["error"].as_str().unwrap().contains(why), "{body}: {e}");
    }
}

/// A webhook receiver on 127.0.0.1 that answers 503 to its first `failures` requests,
/// then records each event.
async fn receiver(failures: usize) -> (u16, Arc<Mutex<(usize, Vec<Value>)>>) {
    let seen = Arc::new(Mutex::new((0usize, Vec::new())));
    let state = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(event): axum::Json<Value>| {
            let state = Arc::clone(&state);
            async move {
                let mut s = state.lock().unwrap();
                s.0 += 1;
                if s.0 <= failures {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                s.1.push(event);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, seen)
}

#[tokio::test]
async fn webhook_receives_revoke_end_and_expire_events_after_failing_first() {
    let dir = tempfile::tempdir().unwrap();
    let (port, seen) = receiver(2).await;
    let d = DaemonOpts::new(dir.path())
        .config_toml(&format!(
            "[webhooks]\nurls = [\"http://127.0.0.1:{port}/hook\"]\nattempts = 5\ntimeout-ms = 1000\n[sessions]\nreaper-interval = 1\n"
        ))
        .start()
        .await;
    let (revoked, token) = d
        .create(json!({"owner": "orchestrator", "labels": {"compose": "c1"}}))
        .await;
    let (ended, _) = d.create(json!({})).await;
    let (expiring, _) = d.create(json!({"timeout": 1})).await;
    let started = Instant::now();
    assert_eq!(d.revoke(&revoked, &token).await.status(), 200);
    let r = d
        .authed(Method::DELETE, &format!("/session/{ended}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The control API answered at once although the receiver was failing.
    assert!(started.elapsed() < Duration::from_millis(500));

    let all_three = eventually(Duration::from_secs(15), || async {
        seen.lock().unwrap().1.len() >= 3
    })
    .await;
    let (attempts, events) = seen.lock().unwrap().clone();
    assert!(all_three, "{events:?}");
    assert_eq!(attempts, 5, "two refused attempts, then three events");
    let got: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_owned(),
                e["session-id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("revoked".to_owned(), revoked.clone()),
            ("ended".to_owned(), ended),
            ("expired".to_owned(), expiring),
        ]
    );
    assert_eq!(events[0]["owner"], "orchestrator");
    assert_eq!(events[0]["labels"], json!({"compose": "c1"}));
    assert!(events[0]["time"].is_string() && events[0]["policy"] == "strict");
    assert!(
        events.iter().all(|e| e["end-time"].is_string()),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_bad_webhook_url_stops_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DaemonOpts::new(dir.path())
        .config_toml("[webhooks]\nurls = [\"http://127.0.0.1:1/\", \"https://x/\"]\n");
    let out = opts.command().output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("webhooks.urls[1]"), "{err}");
}

#[tokio::test]
async fn retention_deletes_reports_and_index_entries_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let (origin, sha_a, _) = origin(dir.path());
    let d = DaemonOpts::new(dir.path())
        .arg("--permissive-mode")
        .config_toml("[storage]\nretention = 2\nsweep-interval = 1\n")
        .start()
        .await;
    let url = format!("{}a.bin", origin.base());
    let (old, old_token) = d.create(json!({"policy": "permissive"})).await;
    let (kept, kept_token) = d.create(json!({"policy": "permissive"})).await;
    for (id, token) in [(&old, &old_token), (&kept, &kept_token)] {
        assert_eq!(d.proxy_get(&url, Some((id, token))).await, 200);
    }
    let r = d
        .authed(Method::DELETE, &format!("/session/{old}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Retained for now: the report, the index entry, the status counters.
    let (status, _) = status_of(&d, &format!("/reports/{old}")).await;
    assert_eq!(status, 200);
    let status_now: Value = d.get_json("/status").await;
    assert_eq!(status_now["retained-sessions"], 1);
    assert!(status_now["oldest-retained-end-time"].is_string());
    let (_, page) = status_of(&d, &format!("/artifacts?sha256={sha_a}")).await;
    assert_eq!(ids(&page).len(), 2);

    let swept = eventually(Duration::from_secs(10), || async {
        status_of(&d, &format!("/reports/{old}")).await.0 == 404
    })
    .await;
    assert!(swept, "the ended session's report outlived its retention");
    let (_, page) = status_of(&d, &format!("/artifacts?sha256={sha_a}")).await;
    assert_eq!(ids(&page), std::slice::from_ref(&kept));
    let (_, listed) = status_of(&d, "/sessions").await;
    assert_eq!(ids(&listed), std::slice::from_ref(&kept));
    let status_now: Value = d.get_json("/status").await;
    assert_eq!(status_now["retained-sessions"], 0);
    assert_eq!(status_now["oldest-retained-end-time"], Value::Null);
    // The live session lost nothing.
    assert_eq!(d.revoke(&kept, &kept_token).await.status(), 200);
    let (_, report) = status_of(&d, &format!("/session/{kept}")).await;
    assert_eq!(report["artifacts"][0]["metadata"]["sha256"], sha_a.as_str());
}

#[tokio::test]
async fn retention_zero_deletes_a_session_when_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let d = DaemonOpts::new(dir.path())
        .config_toml("[storage]\nretention = 0\nsweep-interval = 3600\n")
        .start()
        .await;
    let (id, _) = d.create(json!({})).await;
    d.authed(Method::DELETE, &format!("/session/{id}"))
        .send()
        .await
        .unwrap();
    let gone = eventually(Duration::from_secs(3), || async {
        status_of(&d, &format!("/reports/{id}")).await.0 == 404
    })
    .await;
    assert!(gone, "retention 0 kept the session after its end");
}
