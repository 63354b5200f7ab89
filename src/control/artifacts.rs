//! `GET /artifacts`: which retained sessions fetched an artifact, by sha256 or by the
//! name and version an inspector gave it; the question a rebuild service asks.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use fetchgate_storage::{AuditRecord, SessionHeader, SessionId, Timestamp};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ControlState;
use super::error::ApiError;
use super::sessions::{Page, records, row};
use crate::audit::report;
use crate::session::SessionError;

#[derive(Debug, Deserialize)]
pub struct ArtifactQuery {
    sha256: Option<String>,
    name: Option<String>,
    version: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// What the query asks for.
enum Wanted {
    Sha256([u8; 32]),
    Named {
        name: String,
        version: String,
        kind: Option<String>,
    },
}

impl ArtifactQuery {
    fn wanted(&self) -> Result<Wanted, ApiError> {
        match (&self.sha256, &self.name, &self.version) {
            (Some(hex), None, None) if self.kind.is_none() => {
                let sha = hex::decode(hex)
                    .ok()
                    .filter(|_| hex.bytes().all(|c| !c.is_ascii_uppercase()))
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| {
                        ApiError::bad_request("sha256 must be 64 lowercase hexadecimal characters")
                    })?;
                Ok(Wanted::Sha256(sha))
            }
            (None, Some(name), Some(version)) if !name.is_empty() && !version.is_empty() => {
                Ok(Wanted::Named {
                    name: name.clone(),
                    version: version.clone(),
                    kind: self.kind.clone(),
                })
            }
            _ => Err(ApiError::bad_request(
                "ask for ?sha256=<hex> or ?name=<name>&version=<version>[&type=<type>]",
            )),
        }
    }
}

/// The artifact's `result` in the session, with the metadata it was recorded with.
async fn artifact_in_session(
    st: &ControlState,
    h: &SessionHeader,
    sha256: [u8; 32],
) -> Result<Value, ApiError> {
    let records = records(st, h.id).await?;
    let first = records.iter().find_map(|r| match r {
        AuditRecord::Download(d) if d.body.is_some_and(|b| b.sha256 == sha256) => Some(d),
        _ => None,
    });
    let mut artifact = json!({ "sha256": hex::encode(sha256) });
    if let Some(d) = first {
        artifact["result"] = json!(report::result(d, h.policy));
        for key in ["name", "version", "type"] {
            if let Some(v) = d.metadata.get(key) {
                artifact[key] = json!(v);
            }
        }
    }
    Ok(artifact)
}

/// `GET /artifacts?sha256=...` or `?name=...&version=...[&type=...]`, with `limit` and
/// `cursor`: rows of the session listing plus the artifact's `sha256` and `result`.
pub async fn query(
    State(st): State<Arc<ControlState>>,
    Query(q): Query<ArtifactQuery>,
) -> Result<Json<Value>, ApiError> {
    let wanted = q.wanted()?;
    let page = Page::parse(q.limit.as_deref(), q.cursor.as_deref())?;
    let log = st.sessions.log();
    let hits: Vec<([u8; 32], SessionId)> = match wanted {
        Wanted::Sha256(sha) => log
            .sessions_with_artifact(sha)
            .await
            .map_err(SessionError::from)?
            .into_iter()
            .map(|id| (sha, id))
            .collect(),
        Wanted::Named {
            name,
            version,
            kind,
        } => log
            .artifacts_named(&name, &version, kind.as_deref())
            .await
            .map_err(SessionError::from)?,
    };
    // The index outlives nothing: a session it names whose header is gone is being
    // swept right now, and is left out.
    let mut found = Vec::with_capacity(hits.len());
    for (sha, id) in hits {
        if let Some(h) = st
            .sessions
            .store()
            .get(id)
            .await
            .map_err(SessionError::from)?
        {
            found.push((sha, h));
        }
    }
    let (page, next) = page.take(found, |(sha, h)| (h.created, h.id, *sha));
    let now = Timestamp::now();
    let mut rows = Vec::with_capacity(page.len());
    for (sha, h) in &page {
        let counters = log.counters(h.id).await.map_err(SessionError::from)?;
        let mut r = row(h, now, counters);
        let artifact = artifact_in_session(&st, h, *sha).await?;
        r["sha256"] = artifact["sha256"].clone();
        r["result"] = artifact["result"].clone();
        r["artifact"] = artifact;
        rows.push(r);
    }
    Ok(Json(json!({ "sessions": rows, "next": next })))
}
