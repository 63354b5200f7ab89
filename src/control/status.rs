//! `GET /status` (readiness and health) and `GET /metrics`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use fetchgate_storage::Timestamp;
use serde_json::json;

use super::ControlState;
use super::error::ApiError;
use crate::rfc3339;
use crate::session::{State as SessionState, state};
use crate::telemetry::metric;

/// `GET /status`: 200 with uptime and active sessions, 503 when sessions cannot be served
/// or downloads cannot be recorded.
pub async fn status(
    State(st): State<Arc<ControlState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let unavailable = |e: fetchgate_storage::Error| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("session store unavailable: {e}"),
        )
    };
    st.sessions
        .store()
        .check_health()
        .await
        .map_err(unavailable)?;
    st.sessions.log().check_writable().await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("audit log unavailable: {e}"),
        )
    })?;
    let now = Timestamp::now();
    let sessions = st.sessions.store().list_live().await.map_err(unavailable)?;
    let mut active: Vec<_> = sessions
        .iter()
        .filter(|h| state(h, now) == SessionState::Active)
        .collect();
    active.sort_unstable_by_key(|h| h.created);
    let active: Vec<_> = active
        .into_iter()
        .map(|h| {
            json!({
                "session-id": h.id.to_string(),
                "start-time": rfc3339::format(h.created),
                "policy": h.policy.as_str(),
                "age": (now.as_micros() - h.created.as_micros()).max(0) / 1_000_000,
                "timeout": h.timeout_secs,
            })
        })
        .collect();
    let retained = st.sessions.store().retained().await.map_err(unavailable)?;
    Ok(Json(json!({
        "retained-sessions": retained.count,
        "oldest-retained-end-time": retained.oldest_end.map(rfc3339::format),
        "uptime": st.started_at.elapsed().as_secs(),
        "start-time": rfc3339::format(st.started),
        "session-count": st.sessions.created_since_start(),
        "active-sessions": active,
        "version": env!("CARGO_PKG_VERSION"),
    })))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(st): State<Arc<ControlState>>, headers: HeaderMap) -> Response {
    if st.metrics_require_auth
        && !super::auth::basic_credentials(&headers)
            .is_some_and(|(u, p)| st.credentials.matches(&u, &p))
    {
        return ApiError::unauthorized().into_response();
    }
    sessions_by_state(&st).await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        st.metrics.render(),
    )
        .into_response()
}

/// Sets the sessions-by-state gauges from the store: the live sessions by state (a
/// timed-out one is `expired` until the reaper ends it), and as `ended` every session
/// kept for the retention period, whether it was ended or expired. A store that cannot
/// answer leaves the previous values (its trouble shows in `/status`).
async fn sessions_by_state(st: &ControlState) {
    let store = st.sessions.store();
    let (Ok(live), Ok(retained)) = (store.list_live().await, store.retained().await) else {
        return;
    };
    let now = Timestamp::now();
    let states = [
        SessionState::Active,
        SessionState::Revoked,
        SessionState::Expired,
    ];
    let mut counts = [0u64; 3];
    for h in &live {
        let s = state(h, now);
        if let Some(i) = states.iter().position(|x| *x == s) {
            counts[i] += 1;
        }
    }
    for (s, n) in states.iter().zip(counts) {
        metrics::gauge!(metric::SESSIONS, "state" => s.as_str()).set(n as f64);
    }
    metrics::gauge!(metric::SESSIONS, "state" => SessionState::Ended.as_str())
        .set(retained.count as f64);
}
