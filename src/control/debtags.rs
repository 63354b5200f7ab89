//! `GET /debtags/{suite}/{component}`: package → tags for one suite/component, as JSON
//! or in the `debtags cat` text form, with `X-Debtags-Source` and `X-Debtags-Age`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::ControlState;
use super::error::ApiError;
use crate::debtags::{LookupError, valid_name};
use fetchgate_formats::debtags as tags;

impl From<LookupError> for ApiError {
    fn from(e: LookupError) -> Self {
        let status = match &e {
            LookupError::UnknownArchive(_) => StatusCode::BAD_REQUEST,
            LookupError::NoArchives | LookupError::NotFound { .. } => StatusCode::NOT_FOUND,
            LookupError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            LookupError::Io { .. } => {
                tracing::error!(error = %e, "debtags lookup failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError::new(status, e.to_string())
    }
}

fn checked<'a>(what: &str, value: &'a str) -> Result<&'a str, ApiError> {
    if valid_name(value) {
        Ok(value)
    } else {
        Err(ApiError::bad_request(format!(
            "invalid {what} {value:?}: use letters, digits and . + _ - (not starting with a dot)"
        )))
    }
}

/// The handler.
pub async fn lookup(
    State(st): State<Arc<ControlState>>,
    Path((suite, component)): Path<(String, String)>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if let Some(k) = query
        .keys()
        .find(|k| !["arch", "archive", "format"].contains(&k.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "unknown query parameter {k:?} (known: arch, archive, format)"
        )));
    }
    let suite = checked("suite", &suite)?;
    let component = checked("component", &component)?;
    let arch = query.get("arch").map(|a| checked("arch", a)).transpose()?;
    let text = match query.get("format").map(String::as_str) {
        Some("text") => true,
        Some("json") => false,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown format {other:?} (json or text)"
            )));
        }
        None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/plain")),
    };
    let found = st
        .debtags
        .lookup(
            query.get("archive").map(String::as_str),
            suite,
            component,
            arch,
        )
        .await?;
    let age = SystemTime::now()
        .duration_since(found.read_at)
        .unwrap_or_default()
        .as_secs();
    let mut response = if text {
        (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            tags::to_text(&found.tags),
        )
            .into_response()
    } else {
        axum::Json(&*found.tags).into_response()
    };
    let h = response.headers_mut();
    h.insert(
        "x-debtags-source",
        HeaderValue::from_static(found.source.as_str()),
    );
    h.insert("x-debtags-age", HeaderValue::from(age));
    Ok(response)
}
