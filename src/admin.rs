//! The admin server on :8081: `/metrics` (Prometheus text), `/healthz` (the process is
//! alive), `/readyz` (every readiness gate open and not shutting down), and at `/` a short
//! index of them (the previous operator's guide says `curl localhost:8081`).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::readiness::Readiness;

#[derive(Clone)]
struct AdminState {
    metrics: Metrics,
    readiness: Readiness,
}

/// What `/` answers: the endpoints, one per line, for a person with curl.
const INDEX: &str = "cyberdesk-operator admin server\n\
/metrics  Prometheus metrics\n\
/healthz  200 while the process is alive\n\
/livez    the same as /healthz\n\
/readyz   200 when ready to serve admissions, else 503 with the closed gates\n";

pub fn router(metrics: Metrics, readiness: Readiness) -> Router {
    Router::new()
        .route("/", get(|| async { INDEX }))
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz_handler))
        .with_state(AdminState { metrics, readiness })
}

async fn metrics_handler(State(state): State<AdminState>) -> Response {
    match state.metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("metrics: {e}")).into_response(),
    }
}

async fn readyz_handler(State(state): State<AdminState>) -> Response {
    match state.readiness.check() {
        Ok(()) => (StatusCode::OK, "ok").into_response(),
        Err(reasons) => (StatusCode::SERVICE_UNAVAILABLE, reasons).into_response(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot listen on {addr} for the admin server: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("admin server failed: {0}")]
    Serve(std::io::Error),
}

/// Binds `addr` (so a port clash is reported before anything else starts) and returns the
/// serving future, which ends once `shutdown` fires and open requests finish.
pub async fn bind(
    addr: SocketAddr,
    app: Router,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, impl Future<Output = Result<(), AdminError>>), AdminError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| AdminError::Bind { addr, source })?;
    let serve = async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .map_err(AdminError::Serve)
    };
    Ok((local, serve))
}

#[cfg(test)]
mod tests;
