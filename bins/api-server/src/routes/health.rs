//! Liveness, readiness and the Prometheus scrape.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use crate::error::{error_response, ApiError};
use crate::AppState;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200)))]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Postgres and Redis answer.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200), (status = 503, description = "A dependency is unreachable")))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let checks = state.health.check().await;
    let mut body = Map::new();
    let mut failures = vec![];
    for check in checks {
        let verdict = match check.result {
            Ok(()) => "ok",
            Err(reason) => {
                failures.push(format!("{}: {reason}", check.name));
                "unreachable"
            }
        };
        body.insert(check.name.to_owned(), verdict.into());
    }
    if failures.is_empty() {
        return Json(json!({"status": "ready", "checks": body})).into_response();
    }
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"message": "Not ready", "checks": body}),
        Some(failures.join("; ")),
    )
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let Some(handle) = &state.metrics else {
        return ApiError::unavailable(anyhow::anyhow!("metrics recorder not installed"))
            .into_response();
    };
    if let Some(counts) = state.health.job_counts().await {
        crate::metrics::set_job_counts(&counts);
    }
    crate::metrics::set_status_cache(state.status_reads.stats());
    handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}
