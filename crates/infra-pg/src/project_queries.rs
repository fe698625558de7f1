//! Projects: creating, reading and the dashboard listing.

use domain::ports::RepoError;
use domain::{JobId, JobStatus, NewProject, Project, ProjectId, ProjectSummary, UserId};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::map_err;
use crate::rows::ProjectRow;

pub(crate) async fn create(
    conn: &mut PgConnection,
    project: &NewProject,
) -> Result<Project, RepoError> {
    let row: ProjectRow = sqlx::query_as(
        "INSERT INTO projects (id, user_id, name) VALUES ($1, $2, $3) \
         RETURNING id, user_id, name, created_at, last_build_version",
    )
    .bind(project.id.as_uuid())
    .bind(project.user_id.as_str())
    .bind(&project.name)
    .fetch_one(&mut *conn)
    .await
    .map_err(map_err)?;
    Project::try_from(row)
}

pub(crate) async fn get_for_user(
    conn: &mut PgConnection,
    id: ProjectId,
    user: &UserId,
) -> Result<Option<Project>, RepoError> {
    let row: Option<ProjectRow> = sqlx::query_as(
        "SELECT id, user_id, name, created_at, last_build_version \
         FROM projects WHERE id = $1 AND user_id = $2",
    )
    .bind(id.as_uuid())
    .bind(user.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_err)?;
    row.map(Project::try_from).transpose()
}

#[derive(sqlx::FromRow)]
struct SummaryRow {
    #[sqlx(flatten)]
    project: ProjectRow,
    latest_job_id: Option<Uuid>,
    latest_sandbox_paused: Option<bool>,
}

/// The user's projects, newest first, each with its latest READY job (by completion, then creation) and
/// whether that job's sandbox is paused. The job must belong to the same user as well as to the project, so
/// that a job filed against someone else's project can never surface on their dashboard.
pub(crate) async fn list(
    conn: &mut PgConnection,
    user: &UserId,
) -> Result<Vec<ProjectSummary>, RepoError> {
    let found: Vec<SummaryRow> = sqlx::query_as(
        "SELECT p.id, p.user_id, p.name, p.created_at, p.last_build_version, \
                latest.id AS latest_job_id, latest.sandbox_paused AS latest_sandbox_paused \
         FROM projects p \
         LEFT JOIN LATERAL ( \
             SELECT j.id, j.sandbox_paused FROM jobs j \
             WHERE j.project_id = p.id AND j.user_id = $1 AND j.status = $2 \
             ORDER BY j.completed_at DESC NULLS LAST, j.created_at DESC, j.id DESC \
             LIMIT 1 \
         ) latest ON true \
         WHERE p.user_id = $1 \
         ORDER BY p.created_at DESC, p.id DESC",
    )
    .bind(user.as_str())
    .bind(JobStatus::Ready.as_str())
    .fetch_all(&mut *conn)
    .await
    .map_err(map_err)?;
    found
        .into_iter()
        .map(|r| {
            Ok(ProjectSummary {
                project: Project::try_from(r.project)?,
                latest_job_id: r.latest_job_id.map(JobId::from_uuid),
                sandbox_paused: r.latest_sandbox_paused.unwrap_or(false),
            })
        })
        .collect()
}
