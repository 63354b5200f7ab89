//! Session endpoints: create, revoke, report, end, resources, renew, list, and the
//! retained final report.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use fetchgate_storage::{AuditRecord, SessionHeader, SessionId, Timestamp};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ControlState;
use super::auth::basic_credentials;
use super::error::ApiError;
use super::json::{parse_body, stream};
use crate::audit::report;
use crate::cluster::NodeRecords;
use crate::rfc3339;
use crate::session::{NewSession, SecretSpec, SessionError, State as SessionState, state};

fn session_id(raw: &str) -> Result<SessionId, ApiError> {
    Ok(raw.parse::<SessionId>()?)
}

/// `POST /session` body. Unknown keys (old Launchpad sends `username`) are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CreateBody {
    policy: Option<String>,
    timeout: Option<u64>,
    secrets: Vec<SecretSpec>,
    #[serde(rename = "inspectors-configuration")]
    inspectors_configuration: Option<Value>,
    owner: Option<String>,
    labels: BTreeMap<String, String>,
}

/// `POST /session`.
pub async fn create(
    State(st): State<Arc<ControlState>>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let body: CreateBody = parse_body(body).await?;
    let inspectors_configuration = match body.inspectors_configuration {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => {
            crate::inspect::config::SessionConfig::from_json(&v)
                .map_err(|e| ApiError::bad_request(format!("inspectors-configuration: {e}")))?;
            Some(v.to_string())
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "inspectors-configuration must be a JSON object",
            ));
        }
    };
    let (header, token) = st
        .sessions
        .create(NewSession {
            policy: body.policy,
            timeout_secs: body.timeout,
            secrets: body.secrets,
            inspectors_configuration,
            owner: body.owner,
            labels: body.labels,
        })
        .await?;
    tracing::info!(session = %header.id, policy = header.policy.as_str(), timeout = header.timeout_secs, "session created");
    Ok(Json(
        json!({ "id": header.id.to_string(), "token": token.expose() }),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RevokeBody {
    token: Option<String>,
}

/// `DELETE /session/{id}/token`: the token is the credential, in the body or as Basic
/// auth `id:token`.
pub async fn revoke(
    State(st): State<Arc<ControlState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let id = session_id(&id)?;
    let body: RevokeBody = parse_body(body).await?;
    let token = match body.token {
        Some(t) => t,
        None => match basic_credentials(&headers) {
            Some((user, token)) if user == id.to_string() => token,
            _ => {
                // An unknown session is 404 whatever was sent.
                st.sessions.get(id).await?;
                return Err(ApiError::bad_request(
                    "the token is missing: send {\"token\": \"...\"}",
                ));
            }
        },
    };
    let h = st.sessions.revoke(id, &token).await?;
    let now = Timestamp::now();
    Ok(Json(json!({
        "session-id": h.id.to_string(),
        "start-time": rfc3339::format(h.created),
        "end-time": h.end_time(now).map(rfc3339::format),
        "spool-path": st.sessions.spool_path(h.id).display().to_string(),
    })))
}

/// The session's records: this node's alone, or in an HA pair every node's.
pub(super) async fn records(
    st: &ControlState,
    id: SessionId,
) -> Result<Vec<AuditRecord>, ApiError> {
    match (&st.cluster, st.sessions.membership()) {
        (Some(cluster), Some(membership)) => {
            Ok(cluster.gather(membership, st.sessions.log(), id).await?)
        }
        _ => Ok(st
            .sessions
            .log()
            .scan(id)
            .await
            .map_err(SessionError::from)?),
    }
}

/// `GET /internal/records/{id}`: this node's records of a session, for the other node
/// of an HA pair gathering a report. No state check: the asking node made it.
pub async fn node_records(
    State(st): State<Arc<ControlState>>,
    Path(id): Path<String>,
) -> Result<Json<NodeRecords>, ApiError> {
    let id = session_id(&id)?;
    let node = st
        .sessions
        .membership()
        .map(|m| m.node().clone())
        .ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, "this node is not part of an HA pair")
        })?;
    let records = st
        .sessions
        .log()
        .scan(id)
        .await
        .map_err(SessionError::from)?;
    Ok(Json(NodeRecords { node, records }))
}

async fn report_response(st: &ControlState, h: SessionHeader) -> Result<Response, ApiError> {
    let records = records(st, h.id).await?;
    let spool = st.sessions.spool_path(h.id);
    let report = report::fold(
        &h,
        &spool,
        crate::inspect::INSPECTOR_IDS.map(String::from).to_vec(),
        records,
        Timestamp::now(),
    );
    Ok(stream(report))
}

/// `GET /session/{id}`: the report, once the token is revoked (or expired).
pub async fn get_report(
    State(st): State<Arc<ControlState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = session_id(&id)?;
    let h = st.sessions.get(id).await?;
    match state(&h, Timestamp::now()) {
        SessionState::Active => Err(SessionError::StillActive(id).into()),
        SessionState::Ended => Err(SessionError::Gone(id).into()),
        SessionState::Revoked | SessionState::Expired => report_response(&st, h).await,
    }
}

/// `GET /reports/{id}`: the final report of an ended or expired session.
pub async fn get_final_report(
    State(st): State<Arc<ControlState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = session_id(&id)?;
    let h = st.sessions.get(id).await?;
    let s = state(&h, Timestamp::now());
    if s.is_live() {
        return Err(SessionError::WrongState {
            id,
            state: s.as_str(),
        }
        .into());
    }
    report_response(&st, h).await
}

/// `DELETE /session/{id}`.
pub async fn end(
    State(st): State<Arc<ControlState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = session_id(&id)?;
    st.sessions.end(id).await?;
    Ok(Json(
        json!({ "session-id": id.to_string(), "state": "ended" }),
    ))
}

/// `DELETE /resources/{id}`.
pub async fn delete_resources(
    State(st): State<Arc<ControlState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = session_id(&id)?;
    st.sessions.delete_resources(id).await?;
    Ok(Json(
        json!({ "session-id": id.to_string(), "resources": "deleted" }),
    ))
}

#[derive(Debug, Deserialize)]
struct PatchBody {
    timeout: Option<u64>,
}

/// `PATCH /session/{id}` `{"timeout": <seconds>}`.
pub async fn patch(
    State(st): State<Arc<ControlState>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let id = session_id(&id)?;
    let body: PatchBody = parse_body(body).await?;
    let timeout = body
        .timeout
        .ok_or_else(|| ApiError::bad_request("timeout (seconds) is required"))?;
    let h = st.sessions.set_timeout(id, timeout).await?;
    Ok(Json(row(&h, Timestamp::now(), Default::default())))
}

/// One row of a session listing.
pub(super) fn row(
    h: &SessionHeader,
    now: Timestamp,
    counters: fetchgate_storage::Counters,
) -> Value {
    json!({
        "session-id": h.id.to_string(),
        "state": state(h, now).as_str(),
        "policy": h.policy.as_str(),
        "owner": h.owner,
        "labels": h.labels,
        "start-time": rfc3339::format(h.created),
        "end-time": h.end_time(now).map(rfc3339::format),
        "expires-at": rfc3339::format(h.expires_at()),
        "timeout": h.timeout_secs,
        "downloads": counters.downloads,
        "denied": counters.denied,
    })
}

/// Largest and default page sizes of listings.
const MAX_LIMIT: usize = 1000;
const DEFAULT_LIMIT: usize = 100;

/// Where a listing row sorts, newest first: the session's start time and id, then (for
/// artifact rows, which may list a session once per matching content) the sha256.
pub(super) type RowKey = (Timestamp, SessionId, [u8; 32]);

/// One page of a listing: its size and the key the previous page ended at.
pub(super) struct Page {
    limit: usize,
    after: Option<RowKey>,
}

impl Page {
    /// Reads `?limit=` and `?cursor=`.
    pub(super) fn parse(limit: Option<&str>, cursor: Option<&str>) -> Result<Self, ApiError> {
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "limit must be between 1 and {MAX_LIMIT}"
                    )));
                }
            },
        };
        let after = cursor
            .map(|c| {
                parse_cursor(c).ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid cursor: pass the `next` value of the previous page",
                    )
                })
            })
            .transpose()?;
        Ok(Page { limit, after })
    }

    /// Sorts `items` newest first, keeps those after the cursor, and returns this page
    /// with the cursor of the next one (`None` on the last page).
    pub(super) fn take<T>(
        &self,
        mut items: Vec<T>,
        key: impl Fn(&T) -> RowKey,
    ) -> (Vec<T>, Option<String>) {
        items.retain(|i| self.after.is_none_or(|a| key(i) < a));
        items.sort_unstable_by_key(|i| std::cmp::Reverse(key(i)));
        let more = items.len() > self.limit;
        items.truncate(self.limit);
        let next = items.last().filter(|_| more).map(|i| {
            let (t, id, sha) = key(i);
            if sha == [0; 32] {
                format!("{}-{id}", t.as_micros())
            } else {
                format!("{}-{id}-{}", t.as_micros(), hex::encode(sha))
            }
        });
        (items, next)
    }
}

/// The position after which a page starts: `micros-id` or `micros-id-sha256`.
fn parse_cursor(s: &str) -> Option<RowKey> {
    let mut parts = s.split('-');
    let t = Timestamp::from_micros(parts.next()?.parse().ok()?);
    let id = parts.next()?.parse().ok()?;
    let sha = match parts.next() {
        None => [0; 32],
        Some(hex) => hex::decode(hex).ok()?.try_into().ok()?,
    };
    parts.next().is_none().then_some((t, id, sha))
}

/// The counters of each listed session, as listing rows.
async fn rows(
    st: &ControlState,
    headers: &[SessionHeader],
    now: Timestamp,
) -> Result<Vec<Value>, ApiError> {
    let mut rows = Vec::with_capacity(headers.len());
    for h in headers {
        let counters = st
            .sessions
            .log()
            .counters(h.id)
            .await
            .map_err(SessionError::from)?;
        rows.push(row(h, now, counters));
    }
    Ok(rows)
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    state: Option<String>,
    policy: Option<String>,
    owner: Option<String>,
    /// `key=value`: sessions with that label.
    label: Option<String>,
    /// Sessions started at or after this time (RFC 3339).
    since: Option<String>,
    /// Sessions started before this time (RFC 3339).
    until: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn time_param(name: &str, value: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    value
        .map(|v| {
            rfc3339::parse(v).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{name} must be an RFC 3339 time such as 2026-01-02T03:04:05Z, got {v:?}"
                ))
            })
        })
        .transpose()
}

/// `GET /sessions?state=&policy=&owner=&label=key=value&since=&until=&limit=&cursor=`.
pub async fn list(
    State(st): State<Arc<ControlState>>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let want_state = q
        .state
        .as_deref()
        .map(|s| {
            SessionState::parse(s).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unknown state {s:?}: use active, revoked, ended or expired"
                ))
            })
        })
        .transpose()?;
    if let Some(p) = q.policy.as_deref()
        && !matches!(p, "strict" | "permissive")
    {
        return Err(ApiError::bad_request(format!(
            "unknown policy {p:?}: use strict or permissive"
        )));
    }
    let label = q
        .label
        .as_deref()
        .map(|l| {
            l.split_once('=')
                .ok_or_else(|| ApiError::bad_request(format!("label must be key=value, got {l:?}")))
        })
        .transpose()?;
    let since = time_param("since", q.since.as_deref())?;
    let until = time_param("until", q.until.as_deref())?;
    let page = Page::parse(q.limit.as_deref(), q.cursor.as_deref())?;

    let now = Timestamp::now();
    let store = st.sessions.store();
    // Active and revoked sessions are live ones: no need to read the retained ones.
    let live_only = matches!(
        want_state,
        Some(SessionState::Active | SessionState::Revoked)
    );
    let listed = if live_only {
        store.list_live().await
    } else {
        store.list().await
    };
    let mut all = listed.map_err(SessionError::from)?;
    all.retain(|h| {
        want_state.is_none_or(|s| state(h, now) == s)
            && q.policy.as_deref().is_none_or(|p| h.policy.as_str() == p)
            && q.owner
                .as_deref()
                .is_none_or(|o| h.owner.as_deref() == Some(o))
            && label.is_none_or(|(k, v)| h.labels.get(k).is_some_and(|x| x == v))
            && since.is_none_or(|t| h.created >= t)
            && until.is_none_or(|t| h.created < t)
    });
    let (page, next) = page.take(all, |h| (h.created, h.id, [0; 32]));
    let rows = rows(&st, &page, now).await?;
    Ok(Json(json!({ "sessions": rows, "next": next })))
}
