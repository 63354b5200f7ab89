//! The control API driven by a real HTTP client against the real binary: the session
//! lifecycle exactly as Launchpad and craft-application use it, and every error case.

mod common;

use common::DaemonOpts;
use reqwest::Method;
use serde_json::{Value, json};

async fn daemon(permissive: bool) -> (tempfile::TempDir, common::Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = DaemonOpts::new(dir.path());
    if permissive {
        opts = opts.arg("--permissive-mode");
    }
    let d = opts.start().await;
    (dir, d)
}

async fn error_of(r: reqwest::Response) -> String {
    let v: Value = r.json().await.unwrap();
    v["error"]
        .as_str()
        .expect("JSON body with an error key")
        .to_owned()
}

#[tokio::test]
async fn full_lifecycle_as_launchpad_drives_it() {
    let (_dir, d) = daemon(false).await;
    let status: Value = d
        .anon(Method::GET, "/status")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(status["uptime"].is_u64());
    assert_eq!(status["session-count"], 0);

    // Old Launchpad versions send `username`: ignored.
    let (id, token) = d
        .create(json!({"policy": "strict", "username": "buildd", "timeout": 600}))
        .await;
    assert_eq!(id.len(), 32);
    assert!(
        id.bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert!(token.len() >= 20 && token.bytes().all(|c| c.is_ascii_alphanumeric()));

    let status: Value = d
        .anon(Method::GET, "/status")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["session-count"], 1);
    assert_eq!(status["active-sessions"][0]["session-id"], id.as_str());
    assert_eq!(status["active-sessions"][0]["policy"], "strict");
    assert_eq!(status["active-sessions"][0]["timeout"], 600);

    // The report is refused while the token is active.
    let r = d
        .authed(Method::GET, &format!("/session/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(error_of(r).await.contains("still active"));

    // Resources cannot be deleted while the session is live.
    let r = d
        .authed(Method::DELETE, &format!("/resources/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);

    // Wrong token, then the right one, then again.
    let r = d.revoke(&id, "not-the-token").await;
    assert_eq!(r.status(), 400);
    let r = d.revoke(&id, &token).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["session-id"], id.as_str());
    assert!(v["start-time"].as_str().unwrap().ends_with('Z'));
    let end_time = v["end-time"].as_str().unwrap().to_owned();
    assert!(v["spool-path"].as_str().unwrap().ends_with(&id));
    let r = d.revoke(&id, &token).await;
    assert_eq!(r.status(), 200, "revoking twice is harmless");
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["end-time"],
        end_time.as_str(),
        "the first revocation time stays"
    );

    // craft sends `{}` on GET: accepted.
    let r = d
        .authed(Method::GET, &format!("/session/{id}"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["session-id"], id.as_str());
    assert_eq!(report["policy"], "strict");
    assert_eq!(report["end-time"], end_time.as_str());
    assert!(
        report["generator"]
            .as_str()
            .unwrap()
            .starts_with("fetchgate ")
    );
    assert_eq!(report["artifacts"], json!([]));
    assert_eq!(report["denied"], json!([]));

    // Still revoked, not ended: the final report endpoint refuses.
    let r = d
        .authed(Method::GET, &format!("/reports/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);

    let r = d
        .authed(Method::DELETE, &format!("/session/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = d
        .authed(Method::GET, &format!("/session/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = d
        .authed(Method::DELETE, &format!("/session/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // The retained final report is still there.
    let r = d
        .authed(Method::GET, &format!("/reports/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["session-id"], id.as_str());

    // Launchpad deletes resources right after ending, and may do it twice.
    for _ in 0..2 {
        let r = d
            .authed(Method::DELETE, &format!("/resources/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let unknown = "0".repeat(32);
    let r = d
        .authed(Method::DELETE, &format!("/resources/{unknown}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "nothing to delete is fine");
}

#[tokio::test]
async fn ending_without_revoking_first_is_allowed() {
    let (_dir, d) = daemon(false).await;
    let (id, token) = d.create(json!({})).await;
    let r = d
        .authed(Method::DELETE, &format!("/session/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = d
        .authed(Method::GET, &format!("/session/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = d.get_json(&format!("/reports/{id}")).await;
    assert!(v["end-time"].is_string());
    // The token of an ended session still revokes harmlessly.
    assert_eq!(d.revoke(&id, &token).await.status(), 200);
}

#[tokio::test]
async fn permissive_sessions_need_permissive_mode() {
    let (_dir, strict_only) = daemon(false).await;
    let r = strict_only
        .authed(Method::POST, "/session")
        .json(&json!({"policy": "permissive"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(error_of(r).await.contains("--permissive-mode"));

    let (_dir2, d) = daemon(true).await;
    let (id, token) = d.create(json!({"policy": "permissive"})).await;
    d.revoke(&id, &token).await;
    let v: Value = d.get_json(&format!("/session/{id}")).await;
    assert_eq!(v["policy"], "permissive");
    // No policy means strict, even in permissive mode.
    let (id, token) = d.create(json!({})).await;
    d.revoke(&id, &token).await;
    let v: Value = d.get_json(&format!("/session/{id}")).await;
    assert_eq!(v["policy"], "strict");
}

#[tokio::test]
async fn bad_session_requests_get_400_with_a_reason() {
    let (_dir, d) = daemon(true).await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"policy": "lenient"}), "unknown policy"),
        (json!({"timeout": 0}), "timeout"),
        (json!({"timeout": -5}), "invalid JSON"),
        (json!({"timeout": "6h"}), "invalid JSON"),
        (json!({"policy": 3}), "invalid JSON"),
        (
            json!({"secrets": [{"type": "token", "url": "https://x/*", "basic-credentials": "u:p"}]}),
            "secret #0",
        ),
        (
            json!({"secrets": [{"type": "basic-auth", "url": "https://x/*", "basic-credentials": "nocolon"}]}),
            "basic-credentials",
        ),
        (
            json!({"inspectors-configuration": []}),
            "inspectors-configuration",
        ),
        (json!([1, 2]), "invalid JSON"),
    ];
    for (body, want) in cases {
        let r = d
            .authed(Method::POST, "/session")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let e = error_of(r).await;
        assert!(e.contains(want), "{body}: {e}");
    }
    let r = d
        .authed(Method::POST, "/session")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(error_of(r).await.contains("invalid JSON"));
    let r = d
        .authed(Method::POST, "/session")
        .body(vec![b' '; 2 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // A valid secret is accepted and never echoed.
    let r = d
        .authed(Method::POST, "/session")
        .json(&json!({"secrets": [{"type": "basic-auth", "url": "https://private.example/*", "basic-credentials": "bob:hunter2"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!r.text().await.unwrap().contains("hunter2"));
    // An empty body is `{}`.
    let r = d.authed(Method::POST, "/session").send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn control_credentials_are_required_where_the_spec_says() {
    let (_dir, d) = daemon(false).await;
    let (id, token) = d.create(json!({})).await;
    let protected = [
        (Method::POST, "/session".to_owned()),
        (Method::GET, format!("/session/{id}")),
        (Method::DELETE, format!("/session/{id}")),
        (Method::PATCH, format!("/session/{id}")),
        (Method::DELETE, format!("/resources/{id}")),
        (Method::GET, "/sessions".to_owned()),
        (Method::GET, format!("/reports/{id}")),
    ];
    for (m, path) in &protected {
        for auth in [
            None,
            Some(("craft", "wrong")),
            Some(("craf", "craft")),
            Some(("craft:craft", "")),
        ] {
            let mut req = d.anon(m.clone(), path);
            if let Some((u, p)) = auth {
                req = req.basic_auth(u, Some(p));
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 401, "{m} {path} {auth:?}");
            assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"fetchgate\"");
            assert!(!error_of(r).await.is_empty());
        }
    }
    // Status and revocation need no control credentials.
    assert_eq!(
        d.anon(Method::GET, "/status")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Revocation with Basic `id:token` and no body (an older builder path).
    let r = d
        .anon(Method::DELETE, &format!("/session/{id}/token"))
        .basic_auth(&id, Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Failures are in the log as security events.
    assert!(d.log().contains("control-auth-failure"), "{}", d.log());
}

#[tokio::test]
async fn unknown_and_malformed_ids() {
    let (_dir, d) = daemon(false).await;
    let unknown = "ab".repeat(16);
    let r = d
        .authed(Method::GET, &format!("/session/{unknown}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(error_of(r).await.contains(&unknown));
    assert_eq!(d.revoke(&unknown, "x").await.status(), 404);
    assert_eq!(
        d.authed(Method::DELETE, &format!("/session/{unknown}"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        d.authed(Method::GET, &format!("/reports/{unknown}"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // (`%2e%2e` itself is resolved as `..` by the client before it is sent.)
    for bad in [
        "short",
        "AB".repeat(16).as_str(),
        "..%2fx",
        "%00",
        &"a".repeat(33),
    ] {
        let r = d
            .authed(Method::GET, &format!("/session/{bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        assert!(
            error_of(r).await.contains("32 lowercase hexadecimal"),
            "{bad}"
        );
    }
    let r = d
        .anon(Method::DELETE, &format!("/session/{unknown}/token"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "unknown session is 404 whatever the body");
    let r = d
        .authed(Method::GET, "/no/such/endpoint")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_of(r).await, "no such endpoint");
    let r = d.authed(Method::PUT, "/session").send().await.unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn revoking_without_a_token_is_400() {
    let (_dir, d) = daemon(false).await;
    let (id, _) = d.create(json!({})).await;
    let r = d
        .anon(Method::DELETE, &format!("/session/{id}/token"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(error_of(r).await.contains("token is missing"));
    let r = d
        .anon(Method::DELETE, &format!("/session/{id}/token"))
        .body("{\"token\": 5}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn sessions_list_filters_pages_and_counts() {
    let (_dir, d) = daemon(true).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let policy = if i % 2 == 0 { "strict" } else { "permissive" };
        ids.push(d.create(json!({"policy": policy})).await);
    }
    d.revoke(&ids[1].0, &ids[1].1).await;
    d.authed(Method::DELETE, &format!("/session/{}", ids[2].0))
        .send()
        .await
        .unwrap();

    let list = |q: String| {
        let req = d.authed(Method::GET, &format!("/sessions{q}"));
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let all = list(String::new()).await;
    let got: Vec<&str> = all["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["session-id"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = ids.iter().rev().map(|(id, _)| id.as_str()).collect();
    assert_eq!(got, want, "newest first");
    assert!(all["next"].is_null());
    let row = &all["sessions"][0];
    for key in [
        "session-id",
        "state",
        "policy",
        "start-time",
        "end-time",
        "timeout",
        "downloads",
        "denied",
    ] {
        assert!(row.get(key).is_some(), "row lacks {key}: {row}");
    }
    assert!(row["end-time"].is_null());

    let revoked = list("?state=revoked".into()).await;
    assert_eq!(revoked["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(revoked["sessions"][0]["session-id"], ids[1].0.as_str());
    assert!(revoked["sessions"][0]["end-time"].is_string());
    let ended = list("?state=ended".into()).await;
    assert_eq!(ended["sessions"][0]["session-id"], ids[2].0.as_str());
    let active = list("?state=active".into()).await;
    let got: Vec<&str> = active["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["session-id"].as_str().unwrap())
        .collect();
    let live: Vec<&str> = [4, 3, 0].iter().map(|&i| ids[i].0.as_str()).collect();
    assert_eq!(got, live, "active sessions, newest first");
    let permissive = list("?policy=permissive".into()).await;
    assert_eq!(permissive["sessions"].as_array().unwrap().len(), 2);

    // Paging with a cursor walks every session exactly once.
    let mut seen = Vec::new();
    let mut q = "?limit=2".to_owned();
    loop {
        let page = list(q.clone()).await;
        seen.extend(
            page["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["session-id"].as_str().unwrap().to_owned()),
        );
        match page["next"].as_str() {
            Some(c) => q = format!("?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, want);

    for bad in [
        "?state=sleeping",
        "?policy=lax",
        "?limit=0",
        "?limit=1001",
        "?limit=x",
        "?cursor=nope",
    ] {
        let r = d
            .authed(Method::GET, &format!("/sessions{bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
}

#[tokio::test]
async fn patch_changes_the_timeout_of_live_sessions() {
    let (_dir, d) = daemon(false).await;
    let (id, _) = d.create(json!({"timeout": 60})).await;
    let r = d
        .authed(Method::PATCH, &format!("/session/{id}"))
        .json(&json!({"timeout": 7200}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["timeout"], 7200);
    let r = d
        .authed(Method::PATCH, &format!("/session/{id}"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = d
        .authed(Method::PATCH, &format!("/session/{id}"))
        .json(&json!({"timeout": 10_000_000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    d.authed(Method::DELETE, &format!("/session/{id}"))
        .send()
        .await
        .unwrap();
    let r = d
        .authed(Method::PATCH, &format!("/session/{id}"))
        .json(&json!({"timeout": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
}

#[tokio::test]
async fn metrics_are_exposed_in_prometheus_format() {
    let (_dir, d) = daemon(false).await;
    d.create(json!({})).await;
    let r = d.anon(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("fetchgate_sessions_created_total{policy=\"strict\"} 1"),
        "{text}"
    );
}
