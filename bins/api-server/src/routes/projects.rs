//! `/api/projects`: create, list, read and delete the caller's projects.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use domain::usecases::project::delete_project;

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiJson, ProjectIdPath};
use crate::routes::wire::{CreateProjectRequest, DeletedResponse, ProjectResponse};
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
    let project = state.repo.create_project(&req.parse(user.user_id)?).await?;
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

/// One of the caller's projects, with the fields of the list (a deleted one answers with status `deleted`).
#[utoipa::path(get, path = "/api/projects/{project_id}", tag = "projects",
    params(("project_id" = String, Path, description = "The project's UUID")),
    responses(
        (status = 200, body = ProjectResponse),
        (status = 401, description = "Missing or invalid token"),
        (status = 404, description = "Project not found"),
    ),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    ProjectIdPath(id): ProjectIdPath,
) -> Result<Json<ProjectResponse>, ApiError> {
    let summary = state
        .repo
        .get_project_summary(id, &user.user_id)
        .await?
        .ok_or_else(ApiError::project_not_found)?;
    Ok(Json(ProjectResponse::from_summary(&summary)))
}

/// Soft-deletes one of the caller's projects: hidden from the list, no new builds, its running builds
/// cancelled and its sandboxes killed.
#[utoipa::path(delete, path = "/api/projects/{project_id}", tag = "projects",
    params(("project_id" = String, Path, description = "The project's UUID")),
    responses(
        (status = 200, body = DeletedResponse),
        (status = 401, description = "Missing or invalid token"),
        (status = 404, description = "Project not found"),
    ),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    user: AuthUser,
    ProjectIdPath(id): ProjectIdPath,
) -> Result<Json<DeletedResponse>, ApiError> {
    delete_project(state.cancel_deps(), &user.user_id, id)
        .await?
        .ok_or_else(ApiError::project_not_found)?;
    Ok(Json(DeletedResponse {
        status: "deleted".to_owned(),
    }))
}
