//! `GET /health` (the process is alive) and `GET /ready` (it can serve: database and executor).

use std::collections::BTreeMap;

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    status: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    status: &'static str,
    /// Each dependency: `ok`, or why it is not.
    checks: BTreeMap<&'static str, String>,
}

/// How long `/ready` waits for each check.
const CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Liveness
///
/// Answers while the process runs; needs nothing else.
#[utoipa::path(get, path = "/health", tag = "health", responses((status = 200, description = "The process is alive", body = Health)))]
pub async fn get_health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness
///
/// `200` when the database answers, the executor can run commands and the blocking pool takes
/// work; `503` otherwise, at once while the database is known to be down. A check that does not
/// answer within 2 s counts as failed.
#[utoipa::path(
    get, path = "/ready", tag = "health",
    responses(
        (status = 200, description = "Ready to serve", body = Readiness),
        (status = 503, description = "A dependency is down", body = Readiness),
    )
)]
pub async fn get_ready(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let results = futures_util::future::join_all(state.readiness.iter().map(|check| async move {
        let answer = tokio::time::timeout(CHECK_WAIT, check.check()).await;
        (check.name(), answer.unwrap_or_else(|_| Err(format!("no answer within {CHECK_WAIT:?}"))))
    }))
    .await;
    let ready = results.iter().all(|(_, result)| result.is_ok());
    let checks = results.into_iter().map(|(name, result)| (name, result.unwrap_or_else(|reason| reason))).collect();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Readiness { status: if ready { "ready" } else { "not_ready" }, checks }))
}

/// Prometheus metrics
///
/// The text exposition format, for scraping.
#[utoipa::path(
    get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain; version=0.0.4", body = String))
)]
pub async fn get_metrics(State(state): State<AppState>) -> ([(header::HeaderName, &'static str); 1], String) {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}
