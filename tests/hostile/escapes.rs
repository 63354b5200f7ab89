//! Escapes between sessions and across restarts: a builder holding one session's token
//! must get nothing of another session, and a token once revoked must stay refused when
//! the daemon comes back from a crash or a clean stop (the revocation is durable, not a
//! flag in memory). The HA side, a token revoked on one node refused on the other, is
//! `tests/ha.rs`.

use reqwest::Method;
use serde_json::{Value, json};

use super::{Origin, assert_healthy, daemon_opts};

/// The URLs of the downloads in a report, in report order.
fn downloaded_urls(report: &Value) -> Vec<String> {
    report["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["downloads"].as_array().unwrap())
        .map(|d| d["url"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn one_sessions_token_opens_no_other_session_and_a_revoked_token_stays_refused_after_restarts()
 {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon_opts(dir.path()).start().await;
    let origin = Origin::start().await;
    let url = |name: &str| format!("http://127.0.0.1:{}/{name}", origin.port);
    let (a, token_a) = d.create(json!({ "policy": "permissive" })).await;
    let (b, token_b) = d.create(json!({ "policy": "permissive" })).await;

    // A's token with B's id: refused on the proxy, and it cannot revoke B's token,
    // neither in the JSON body nor as Basic credentials.
    assert_eq!(d.proxy_get(&url("a-as-b"), Some((&b, &token_a))).await, 407);
    let r = d.revoke(&b, &token_a).await;
    assert_eq!(r.status(), 400);
    let r = d
        .anon(Method::DELETE, &format!("/session/{b}/token"))
        .basic_auth(&b, Some(&token_a))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(d.proxy_get(&url("b-1"), Some((&b, &token_b))).await, 200);
    assert_eq!(d.proxy_get(&url("a-1"), Some((&a, &token_a))).await, 200);

    assert_eq!(d.revoke(&a, &token_a).await.status(), 200);
    assert_eq!(d.proxy_get(&url("a-2"), Some((&a, &token_a))).await, 407);

    // A crash, then a clean stop: the revocation holds after each restart, B's token
    // still works, and A's token still opens nothing of B.
    let opts = d.kill9();
    let mut d = opts.start().await;
    for round in ["after kill -9", "after SIGTERM"] {
        assert_eq!(
            d.proxy_get(&url("a-3"), Some((&a, &token_a))).await,
            407,
            "{round}"
        );
        assert_eq!(
            d.proxy_get(&url("a-as-b"), Some((&b, &token_a))).await,
            407,
            "{round}"
        );
        assert_eq!(
            d.proxy_get(&url("b-2"), Some((&b, &token_b))).await,
            200,
            "{round}"
        );
        if round == "after kill -9" {
            d.signal(libc::SIGTERM);
            assert!(
                d.wait_exit(std::time::Duration::from_secs(5))
                    .is_some_and(|s| s.success()),
                "SIGTERM did not stop the daemon cleanly"
            );
            d = d.kill9().start().await;
        }
    }

    // Each report holds its own session's downloads and nothing of the other's.
    let report_a = d.get_json(&format!("/session/{a}")).await;
    assert_eq!(downloaded_urls(&report_a), [url("a-1")], "{report_a:#}");
    let report_b = d.report(&b, &token_b).await;
    assert_eq!(
        downloaded_urls(&report_b),
        [url("b-1"), url("b-2"), url("b-2")],
        "{report_b:#}"
    );
    assert_healthy(&d, &origin).await;
}
