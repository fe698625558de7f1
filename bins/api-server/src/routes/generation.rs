//! `/api/generation`: start a build, read its status, cancel it, check its preview.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use domain::usecases::cancel::{cancel_job, CancelError};
use domain::usecases::submit::{busy_message, submit_job, SubmitError};

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiJson, JobIdPath};
use crate::preview_check;
use crate::routes::wire::{
    CancelResponse, GenerationStatusResponse, PreviewCheckResponse, StartGenerationResponse,
    StartRequest,
};
use crate::routes::{load_owned_job, load_owned_job_from};
use crate::AppState;

/// Maps the submit use case's refusals to the API's answers.
pub fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::ProjectNotFound => ApiError::project_not_found(),
        SubmitError::Busy {
            retry_after_minutes,
        } => ApiError::Busy(busy_message(retry_after_minutes)),
        SubmitError::TooManyScheduled { scheduled } => ApiError::BadRequest {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!(
                "Daily build limit reached and {scheduled} builds are already scheduled for later days. \
                 Try again after the daily reset."
            ),
        },
        SubmitError::Repo(e) => e.into(),
        SubmitError::Queue(e) => e.into(),
    }
}

/// Starts a build of one of the caller's projects.
#[utoipa::path(post, path = "/api/generation/start", tag = "generation",
    request_body = StartRequest,
    responses(
        (status = 201, body = StartGenerationResponse),
        (status = 401, description = "Missing or invalid token"),
        (status = 404, description = "Project not found"),
        (status = 422, description = "A field is missing, empty or invalid"),
        (status = 429, description = "Daily limit reached and the scheduled builds at their cap"),
        (status = 503, description = "System busy. Try again in N minutes."),
    ),
    security(("bearer" = [])))]
pub async fn start(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<StartRequest>,
) -> Result<(StatusCode, Json<StartGenerationResponse>), ApiError> {
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
    Ok((
        StatusCode::CREATED,
        Json(StartGenerationResponse {
            job_id: submitted.job.id.to_string(),
            status: submitted.job.status.as_str().to_owned(),
            build_version: submitted.build_version,
        }),
    ))
}

/// The job's status, from the live hash (or Postgres when the hash is missing).
#[utoipa::path(get, path = "/api/generation/{job_id}/status", tag = "generation",
    params(("job_id" = String, Path, description = "The job's UUID")),
    responses(
        (status = 200, body = GenerationStatusResponse),
        (status = 404, description = "Job not found"),
        (status = 422, description = "job_id is not a valid UUID"),
    ),
    security(("bearer" = [])))]
pub async fn status(
    State(state): State<AppState>,
    user: AuthUser,
    JobIdPath(id): JobIdPath,
) -> Result<Json<GenerationStatusResponse>, ApiError> {
    let job = load_owned_job_from(&state.status_reads, &state, &user.user_id, id).await?;
    // Without the gateway, a founder watching a running preview keeps it awake (the idle re-pause reads
    // this); with it, the gateway sees the visitors themselves.
    if state.api_calls_are_activity() {
        if let Err(error) = state.activity.touch_if_running(&job).await {
            tracing::warn!(job_id = %id, error = %error, "preview activity not recorded");
        }
    }
    let mut answer = GenerationStatusResponse::from_job(&job);
    answer.preview_url = state.preview_url_of(&job);
    Ok(Json(answer))
}

/// Cancels a build that is not finished.
#[utoipa::path(post, path = "/api/generation/{job_id}/cancel", tag = "generation",
    params(("job_id" = String, Path, description = "The job's UUID")),
    responses(
        (status = 200, body = CancelResponse),
        (status = 404, description = "Job not found"),
        (status = 409, description = "Job is already in terminal state"),
    ),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    user: AuthUser,
    JobIdPath(id): JobIdPath,
) -> Result<Json<CancelResponse>, ApiError> {
    match cancel_job(state.cancel_deps(), &user.user_id, id).await {
        Ok(_) => {
            crate::metrics::job_cancelled();
            Ok(Json(CancelResponse {
                job_id: id.to_string(),
                status: "cancelled".into(),
                message: "Build cancelled".into(),
            }))
        }
        Err(CancelError::NotFound) => Err(ApiError::job_not_found()),
        Err(CancelError::Terminal(status)) => Err(ApiError::Conflict(format!(
            "Job is already in terminal state ({status}). Cannot cancel."
        ))),
        Err(CancelError::Contended) => Err(ApiError::Conflict(
            "Job status is changing; try again".into(),
        )),
        Err(CancelError::Repo(e)) => Err(e.into()),
    }
}

/// Whether the preview can be shown in an iframe, and why not.
#[utoipa::path(get, path = "/api/generation/{job_id}/preview-check", tag = "generation",
    params(("job_id" = String, Path, description = "The job's UUID")),
    responses(
        (status = 200, body = PreviewCheckResponse),
        (status = 404, description = "Job not found, or No preview URL available"),
    ),
    security(("bearer" = [])))]
pub async fn preview_check(
    State(state): State<AppState>,
    user: AuthUser,
    JobIdPath(id): JobIdPath,
) -> Result<Json<PreviewCheckResponse>, ApiError> {
    let job = load_owned_job(&state, &user.user_id, id).await?;
    let url = job
        .preview_url
        .clone()
        .ok_or(ApiError::NotFound("No preview URL available"))?;
    if state.api_calls_are_activity() {
        if let Err(error) = state.activity.touch_if_running(&job).await {
            tracing::warn!(job_id = %id, error = %error, "preview activity not recorded");
        }
    }
    // As the status answer says at the same instant: paused, or pausing (about to be).
    let verdict = if job.sandbox_state.leads_to_resume() {
        preview_check::Verdict::not("Sandbox is paused")
    } else {
        preview_check::judge(state.probe.get(&url).await)
    };
    Ok(Json(PreviewCheckResponse {
        embeddable: verdict.embeddable,
        preview_url: state.public_preview(job.id, Some(&url)).unwrap_or(url),
        reason: verdict.reason,
    }))
}
