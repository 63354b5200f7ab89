//! The control API's error type and the one place errors become HTTP statuses.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fetchgate_storage::{InvalidSessionId, NodeId};

use crate::cluster::GatherError;
use crate::session::SessionError;

/// An error answered as `{"error": "<reason>"}` with its status code (and, when a node
/// of an HA pair is to blame, `"node": "<name>"`).
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub node: Option<NodeId>,
}

impl ApiError {
    /// An error with an explicit status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            node: None,
        }
    }

    /// 400 with a reason.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401 asking for Basic credentials.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "control API credentials required (HTTP Basic)",
        )
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        use SessionError::*;
        let status = match &e {
            NotFound(_) | Gone(_) => StatusCode::NOT_FOUND,
            WrongToken(_)
            | UnknownPolicy(_)
            | PermissiveNotAllowed
            | InvalidTimeout { .. }
            | InvalidSecret { .. }
            | InvalidOwnerOrLabels(_)
            | StillActive(_) => StatusCode::BAD_REQUEST,
            WrongState { .. } => StatusCode::CONFLICT,
            Storage(fetchgate_storage::Error::Backend(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "control request failed");
        }
        ApiError::new(status, e.to_string())
    }
}

impl From<GatherError> for ApiError {
    fn from(e: GatherError) -> Self {
        match e {
            GatherError::Storage(e) => SessionError::Storage(e).into(),
            GatherError::Unreachable { ref node, .. } => {
                tracing::error!(error = %e, "report incomplete");
                ApiError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    node: Some(node.clone()),
                    message: e.to_string(),
                }
            }
        }
    }
}

impl From<InvalidSessionId> for ApiError {
    fn from(e: InvalidSessionId) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.message });
        if let Some(node) = &self.node {
            body["node"] = node.as_str().into();
        }
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"fetchgate\""),
            );
        }
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body is still on the wire: never reuse this connection.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}
