//! `/api/projects`: create and list the caller's projects.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use domain::{NewProject, ProjectId};

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiJson};
use crate::routes::wire::{CreateProjectRequest, ProjectResponse};
use crate::AppState;

/// Creates a project owned by the caller.
#[utoipa::path(post, path = "/api/projects", tag = "projects",
    request_body = CreateProjectRequest,
    responses(
        (status = 201, body = ProjectResponse),
        (status = 401, description = "Missing or invalid token"),
        (status = 422, description = "name is missing, empty or too long"),
    ),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<CreateProjectRequest>,
) -> Result<(StatusCode, Json<ProjectResponse>), ApiError> {
    let name = req.parse()?;
    let project = state
        .repo
        .create_project(&NewProject {
            id: ProjectId::new(),
            user_id: user.user_id,
            name,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(ProjectResponse::new(&project))))
}

/// The caller's projects, each with its latest READY job and whether that job's sandbox is paused.
#[utoipa::path(get, path = "/api/projects", tag = "projects",
    responses(
        (status = 200, body = [ProjectResponse]),
        (status = 401, description = "Missing or invalid token"),
    ),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<Vec<ProjectResponse>>, ApiError> {
    let projects = state.repo.list_projects(&user.user_id).await?;
    Ok(Json(
        projects.iter().map(ProjectResponse::from_summary).collect(),
    ))
}
