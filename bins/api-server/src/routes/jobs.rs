//! `/api/jobs`: submit a job and read it back with the caller's daily usage.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use domain::usecases::submit::submit_job;
use domain::{JobId, JobStatus};

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiJson, JobIdPath};
use crate::routes::generation::submit_error;
use crate::routes::load_owned_job;
use domain::ports::DailyUsage;

use crate::routes::wire::{
    JobStatusResponse, SandboxSecondsResponse, StartRequest, SubmitJobResponse, UsageResponse,
};
use crate::AppState;

/// Submits a job (the same rules as `/api/generation/start`) and answers with the usage counters.
#[utoipa::path(post, path = "/api/jobs", tag = "jobs",
    request_body = StartRequest,
    responses(
        (status = 201, body = SubmitJobResponse),
        (status = 401, description = "Missing or invalid token"),
        (status = 404, description = "Project not found"),
        (status = 422, description = "A field is missing, empty or invalid"),
        (status = 503, description = "System busy. Try again in N minutes."),
    ),
    security(("bearer" = [])))]
pub async fn submit(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<StartRequest>,
) -> Result<(StatusCode, Json<SubmitJobResponse>), ApiError> {
    let (project_id, goal) = req.parse()?;
    let submitted = submit_job(
        state.submit_deps(),
        &user.user_id,
        user.tier,
        project_id,
        goal,
    )
    .await
    .map_err(submit_error)?;
    crate::metrics::job_submitted(submitted.job.status);
    let status = submitted.job.status;
    let (position, message) = if status == JobStatus::Scheduled {
        (0, "Daily limit reached. Scheduled for tomorrow.".to_owned())
    } else {
        let position = queue_position(&state, submitted.job.id, status).await;
        (position, format!("Queued at position {position}"))
    };
    Ok((
        StatusCode::CREATED,
        Json(SubmitJobResponse {
            job_id: submitted.job.id.to_string(),
            status: status.as_str().to_owned(),
            position,
            estimated_wait: None,
            usage: submitted.usage.into(),
            message,
        }),
    ))
}

/// A job with the caller's usage counters.
#[utoipa::path(get, path = "/api/jobs/{job_id}", tag = "jobs",
    params(("job_id" = String, Path, description = "The job's UUID")),
    responses(
        (status = 200, body = JobStatusResponse),
        (status = 404, description = "Job not found"),
    ),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    JobIdPath(id): JobIdPath,
) -> Result<Json<JobStatusResponse>, ApiError> {
    let job = load_owned_job(&state, &user.user_id, id).await?;
    let limit = state.tiers.limits(user.tier).daily_jobs;
    let (day, resets_at) = domain::quota::utc_day(chrono::Utc::now());
    let usage = DailyUsage {
        used: state.repo.jobs_counted_on(&user.user_id, day).await?,
        limit,
        resets_at,
    };
    let seconds = state
        .repo
        .sandbox_seconds(job.id)
        .await?
        .unwrap_or_default();
    Ok(Json(JobStatusResponse {
        job_id: job.id.to_string(),
        status: job.status.as_str().to_owned(),
        position: queue_position(&state, job.id, job.status).await,
        message: job.status_message.clone(),
        usage: UsageResponse::from(usage),
        sandbox_seconds: SandboxSecondsResponse {
            billed: (seconds.billed * 10.0).round() / 10.0,
            visited: seconds.visited,
        },
    }))
}

/// The job's 1-based place in the queue; 0 when it is not waiting there (as the Python API answered).
async fn queue_position(state: &AppState, id: JobId, status: JobStatus) -> usize {
    if status != JobStatus::Queued {
        return 0;
    }
    match state.queue.position(id).await {
        Ok(place) => place.unwrap_or(0),
        Err(error) => {
            tracing::warn!(job_id = %id, error = %error, "queue position unavailable");
            0
        }
    }
}
