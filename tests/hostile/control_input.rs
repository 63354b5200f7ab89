//! Bad input on the control port: every refusal is the right status with a JSON body
//! saying what was wrong, and nothing already recorded is lost.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::{assert_healthy, exchange, setup};

/// The JSON body of a raw HTTP answer.
fn json_body(text: &str) -> Value {
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test]
async fn malformed_bodies_are_400_or_413_with_a_reason_and_lose_nothing() {
    let (_dir, d, origin) = setup().await;
    let (kept, _) = d.create(json!({})).await;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("truncated JSON", b"{\"policy\": ".to_vec(), 400),
        ("not JSON", b"policy=strict".to_vec(), 400),
        ("a wrong type", br#"{"policy": 5}"#.to_vec(), 400),
        (
            "an unknown policy",
            br#"{"policy": "lenient"}"#.to_vec(),
            400,
        ),
        ("a negative timeout", br#"{"timeout": -1}"#.to_vec(), 400),
        ("an array", b"[]".to_vec(), 400),
        ("invalid UTF-8", b"{\"policy\": \"\xff\xfe\"}".to_vec(), 400),
        ("a huge body", vec![b' '; 2 << 20], 413),
    ];
    for (what, body, status) in cases {
        let r = d
            .authed(Method::POST, "/session")
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{what}");
        let v: Value = r.json().await.unwrap();
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {v}"
        );
    }
    // Nothing was lost: the session created before is still there, and only it.
    let list = d.get_json("/sessions").await;
    let ids: Vec<&str> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["session-id"].as_str())
        .collect();
    assert_eq!(ids, [kept.as_str()]);
    assert_healthy(&d, &origin).await;
}

#[tokio::test]
async fn odd_ids_and_paths_are_refused_with_json() {
    let (_dir, d, origin) = setup().await;
    let (id, _) = d.create(json!({})).await;
    let auth = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode("craft:craft")
    };
    let short = &id[..id.len() - 2];
    let long = format!("{id}00");
    let upper = id.to_uppercase();
    for (method, path) in [
        ("DELETE", "/resources/../x".to_owned()),
        ("DELETE", "/resources/%2e%2e".to_owned()),
        ("DELETE", "/resources/%2e%2e%2fsessions".to_owned()),
        ("GET", "/session/..%2f..%2fetc%2fpasswd".to_owned()),
        ("GET", "/session/%00".to_owned()),
        ("GET", format!("/session/{id}%00")),
        ("GET", format!("/session/{short}")),
        ("GET", format!("/session/{long}")),
        ("GET", format!("/session/{upper}x")),
        (
            "GET",
            "/session/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz".to_owned(),
        ),
        ("DELETE", "/session//token".to_owned()),
        ("GET", format!("/reports/{id}/../../status")),
    ] {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let answer = exchange(
            d.opts.control_port,
            request.as_bytes(),
            Duration::from_secs(5),
        )
        .await;
        let status = answer.status().unwrap_or(0);
        assert!(
            matches!(status, 400 | 404 | 405),
            "{method} {path}: {answer:?}"
        );
        let v = json_body(&answer.text);
        assert!(v["error"].is_string(), "{method} {path}: {v}");
    }
    // The session those paths tried to reach is untouched.
    let list = d.get_json("/sessions").await;
    assert_eq!(list["sessions"][0]["session-id"], id.as_str(), "{list}");
    assert_eq!(list["sessions"][0]["state"], "active", "{list}");
    assert_healthy(&d, &origin).await;
}

#[tokio::test]
async fn control_credentials_must_match_exactly() {
    let (_dir, d, origin) = setup().await;
    for (user, password) in [
        ("craft", "craft:extra"),
        ("craft:craft", ""),
        ("craft", "craf"),
        ("craft", "craftcraft"),
        ("Craft", "craft"),
        ("", "craft"),
        ("craft", ""),
    ] {
        let r = d
            .anon(Method::GET, "/sessions")
            .basic_auth(user, Some(password))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{user:?}:{password:?}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].is_string(), "{v}");
    }
    for header in [
        "Basic",
        "Basic !!!not-base64!!!",
        "Bearer craft",
        "Basic Y3JhZnQ=",
    ] {
        let r = d
            .anon(Method::GET, "/sessions")
            .header("Authorization", header)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{header}");
    }
    assert_healthy(&d, &origin).await;
}
