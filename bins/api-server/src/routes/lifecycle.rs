//! `/api/generation/{job_id}/resume` and `/snapshot`: the sandbox after READY. Both use cases bound
//! their own time, so these routes sit outside the generic request timeout.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::json;

use domain::usecases::resume::ResumeError;
use domain::usecases::snapshot::SnapshotError;

use crate::auth::AuthUser;
use crate::error::{ApiError, JobIdPath};
use crate::routes::wire::{ResumeResponse, SnapshotResponse};
use crate::AppState;

const NO_SANDBOX: &str = "No sandbox_id associated with this job";

/// Resumes a READY job's sandbox and answers a working preview URL.
#[utoipa::path(post, path = "/api/generation/{job_id}/resume", tag = "generation",
    params(("job_id" = String, Path, description = "The job's UUID")),
    responses(
        (status = 200, body = ResumeResponse),
        (status = 404, description = "Job not found, or No sandbox_id associated with this job"),
        (status = 422, description = "The job is not READY"),
        (status = 503, description = "`{detail: {message, error_type: sandbox_expired | sandbox_unreachable}}`"),
    ),
    security(("bearer" = [])))]
pub async fn resume(
    State(state): State<AppState>,
    user: AuthUser,
    JobIdPath(id): JobIdPath,
) -> Result<Json<ResumeResponse>, ApiError> {
    let started = std::time::Instant::now();
    let result = state.resume.resume(&user.user_id, id).await;
    crate::metrics::resume_finished(resume_outcome(&result), started.elapsed());
    match result {
        Ok(resumed) => Ok(Json(ResumeResponse {
            preview_url: state
                .public_preview(id, Some(&resumed.preview_url))
                .unwrap_or(resumed.preview_url),
            sandbox_id: resumed.sandbox_id.to_string(),
        })),
        Err(ResumeError::NotFound) => Err(ApiError::job_not_found()),
        Err(ResumeError::NoSandbox) => Err(ApiError::NotFound(NO_SANDBOX)),
        Err(ResumeError::NotReady(status)) => Err(ApiError::Validation(format!(
            "Cannot resume job in state '{status}'. Job must be READY."
        ))),
        Err(ResumeError::Repo(e)) => Err(e.into()),
        Err(e @ (ResumeError::Expired { .. } | ResumeError::Unreachable { .. })) => {
            tracing::warn!(job_id = %id, error = %e, "resume failed");
            Err(ApiError::Detail {
                status: StatusCode::SERVICE_UNAVAILABLE,
                detail: json!({
                    "message": e.user_message().unwrap_or_default(),
                    "error_type": e.error_type().unwrap_or_default(),
                }),
            })
        }
    }
}

/// The outcome label of a resume for `slipway_resume_seconds`.
fn resume_outcome<T>(result: &Result<T, ResumeError>) -> &'static str {
    match result {
        Ok(_) => "resumed",
        Err(ResumeError::NotFound) => "not_found",
        Err(ResumeError::NoSandbox) => "no_sandbox",
        Err(ResumeError::NotReady(_)) => "not_ready",
        Err(ResumeError::Repo(_)) => "store_error",
        Err(e @ (ResumeError::Expired { .. } | ResumeError::Unreachable { .. })) => {
            e.error_type().unwrap_or("sandbox_unreachable")
        }
    }
}

/// Pauses a READY job's sandbox and reports whether the provider confirmed it.
#[utoipa::path(post, path = "/api/generation/{job_id}/snapshot", tag = "generation",
    params(("job_id" = String, Path, description = "The job's UUID")),
    responses(
        (status = 200, body = SnapshotResponse),
        (status = 404, description = "Job not found, or No sandbox_id associated with this job"),
        (status = 422, description = "Cannot snapshot job in state '…'. Job must be READY."),
        (status = 503, description = "`{detail: {message, error_type, paused: false}}`"),
    ),
    security(("bearer" = [])))]
pub async fn snapshot(
    State(state): State<AppState>,
    user: AuthUser,
    JobIdPath(id): JobIdPath,
) -> Result<Json<SnapshotResponse>, ApiError> {
    let not_paused = |error_type: &str, message: &str| ApiError::Detail {
        status: StatusCode::SERVICE_UNAVAILABLE,
        detail: json!({"message": message, "error_type": error_type, "paused": false}),
    };
    match state.snapshot.snapshot(&user.user_id, id).await {
        Ok(result) => Ok(Json(SnapshotResponse {
            job_id: id.to_string(),
            paused: result.paused,
        })),
        Err(SnapshotError::NotFound) => Err(ApiError::job_not_found()),
        Err(SnapshotError::NoSandbox) => Err(ApiError::NotFound(NO_SANDBOX)),
        Err(SnapshotError::NotReady(status)) => Err(ApiError::Validation(format!(
            "Cannot snapshot job in state '{status}'. Job must be READY."
        ))),
        Err(SnapshotError::Expired) => Err(not_paused(
            "sandbox_expired",
            "Sandbox has expired. Please rebuild.",
        )),
        Err(SnapshotError::PauseFailed(reason)) => {
            tracing::warn!(job_id = %id, reason = %reason, "snapshot pause failed");
            Err(not_paused(
                "pause_failed",
                "The sandbox could not be paused. Please try again.",
            ))
        }
        Err(SnapshotError::Repo(e)) => Err(e.into()),
    }
}
