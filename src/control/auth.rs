//! HTTP Basic authentication of control API clients.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;

use super::ControlState;
use super::error::ApiError;
use crate::config::Credentials;
use crate::telemetry::{SECURITY, metric};

/// The `user` and `password` of an `Authorization: Basic` header, if well formed.
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    fetchgate_formats::basic_auth::parse(headers.get(header::AUTHORIZATION)?.as_bytes())
}

fn authorised(credentials: &Credentials, headers: &HeaderMap) -> bool {
    basic_credentials(headers).is_some_and(|(u, p)| credentials.matches(&u, &p))
}

/// Middleware: 401 unless the request carries the control credentials.
pub async fn require_basic(
    State(state): State<Arc<ControlState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if authorised(&state.credentials, request.headers()) {
        return Ok(next.run(request).await);
    }
    metrics::counter!(metric::CONTROL_AUTH_FAILURES).increment(1);
    tracing::warn!(
        target: SECURITY,
        event = "control-auth-failure",
        peer = %peer,
        method = %request.method(),
        path = %request.uri().path(),
        "control API request without valid credentials"
    );
    Err(ApiError::unauthorized())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    fn with_auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn only_the_configured_pair_is_authorised() {
        let c = Credentials::parse("craft:craft", "X").unwrap();
        assert!(authorised(
            &c,
            &with_auth(&format!("Basic {}", STANDARD.encode("craft:craft")))
        ));
        assert!(!authorised(
            &c,
            &with_auth(&format!("Basic {}", STANDARD.encode("craft:craft2")))
        ));
        assert!(!authorised(&c, &HeaderMap::new()));
    }
}
