//! The control API (default port 9999): the reference fetch-service's endpoints plus
//! fetchgate's extensions, as specified in `shared/spec/control-api.md`.
//!
//! Handlers translate HTTP to calls on [`crate::session::Sessions`] and back; errors
//! become statuses in one place ([`error::ApiError`]). Nothing here touches storage
//! except through the session service.

mod artifacts;
mod auth;
mod debtags;
mod error;
mod json;
mod sessions;
mod status;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use fetchgate_storage::Timestamp;
use metrics_exporter_prometheus::PrometheusHandle;

pub use self::error::ApiError;
use crate::cluster::Cluster;
use crate::config::Credentials;
use crate::debtags::Debtags;
use crate::idle::Activity;
use crate::session::Sessions;
use crate::telemetry::metric;

/// What the handlers share.
pub struct ControlState {
    pub sessions: Arc<Sessions>,
    pub credentials: Credentials,
    pub metrics: PrometheusHandle,
    pub metrics_require_auth: bool,
    pub started: Timestamp,
    pub started_at: Instant,
    pub activity: Arc<Activity>,
    pub debtags: Arc<Debtags>,
    /// The other nodes of an HA pair, whose records reports gather.
    pub cluster: Option<Arc<Cluster>>,
}

/// Paths that are probes, not client activity: they neither keep an idle daemon alive
/// nor need credentials.
const PROBES: [&str; 2] = ["/status", "/metrics"];

async fn track(State(st): State<Arc<ControlState>>, request: Request, next: Next) -> Response {
    // Route templates as `/session/:id`: braces inside a label value trip up some
    // Prometheus text parsers.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().replace('{', ":").replace('}', ""))
        .unwrap_or_else(|| "unmatched".to_owned());
    if !PROBES.contains(&route.as_str()) {
        st.activity.touch();
    }
    let response = next.run(request).await;
    metrics::counter!(metric::CONTROL_REQUESTS, "route" => route, "status" => response.status().as_str().to_owned())
        .increment(1);
    response
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn method_not_allowed(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response.status() == StatusCode::METHOD_NOT_ALLOWED {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed on this endpoint",
        )
        .into_response();
    }
    response
}

/// The control API's routes.
pub fn router(state: Arc<ControlState>) -> Router {
    let protected = Router::new()
        .route("/session", post(sessions::create))
        .route(
            "/session/{id}",
            get(sessions::get_report)
                .delete(sessions::end)
                .patch(sessions::patch),
        )
        .route("/resources/{id}", delete(sessions::delete_resources))
        .route("/sessions", get(sessions::list))
        .route("/artifacts", get(artifacts::query))
        .route("/reports/{id}", get(sessions::get_final_report))
        .route("/debtags/{suite}/{component}", get(debtags::lookup))
        .route("/internal/records/{id}", get(sessions::node_records))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::require_basic,
        ));
    Router::new()
        .route("/status", get(status::status))
        .route("/metrics", get(status::metrics))
        .route("/session/{id}/token", delete(sessions::revoke))
        .merge(protected)
        .fallback(not_found)
        .layer(middleware::from_fn(method_not_allowed))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), track))
        .with_state(state)
}

/// Serves the control API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ControlState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
