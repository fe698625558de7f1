//! Projects: creating, reading, the dashboard listing and the soft delete.

use domain::ports::RepoError;
use domain::{
    JobId, JobStatus, NewProject, Project, ProjectId, ProjectStatus, ProjectSummary, SandboxState,
    UserId,
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::map_err;
use crate::rows::ProjectRow;

/// The columns of a [`ProjectRow`], in a statement over `projects` (aliased `p` where one is needed).
const COLUMNS: &str =
    "id, user_id, name, description, github_repo, status, created_at, last_build_version";

pub(crate) async fn create(
    conn: &mut PgConnection,
    project: &NewProject,
) -> Result<Project, RepoError> {
    let row: ProjectRow = sqlx::query_as(&format!(
        "INSERT INTO projects (id, user_id, name, description, github_repo) \
         VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    ))
    .bind(project.id.as_uuid())
    .bind(project.user_id.as_str())
    .bind(&project.name)
    .bind(&project.description)
    .bind(project.github_repo.as_deref())
    .fetch_one(&mut *conn)
    .await
    .map_err(map_err)?;
    Project::try_from(row)
}

/// The project if `user` owns it, whatever its status (a deleted one answers with status `deleted`).
pub(crate) async fn get_for_user(
    conn: &mut PgConnection,
    id: ProjectId,
    user: &UserId,
) -> Result<Option<Project>, RepoError> {
    let row: Option<ProjectRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM projects WHERE id = $1 AND user_id = $2"
    ))
    .bind(id.as_uuid())
    .bind(user.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_err)?;
    row.map(Project::try_from).transpose()
}

/// Soft-deletes the project if `user` owns it (`None` when not): status `deleted`, whatever it was, which
/// repeats harmlessly.
pub(crate) async fn delete(
    conn: &mut PgConnection,
    id: ProjectId,
    user: &UserId,
) -> Result<Option<Project>, RepoError> {
    let row: Option<ProjectRow> = sqlx::query_as(&format!(
        "UPDATE projects SET status = $3 WHERE id = $1 AND user_id = $2 RETURNING {COLUMNS}"
    ))
    .bind(id.as_uuid())
    .bind(user.as_str())
    .bind(ProjectStatus::Deleted.as_str())
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
    latest_sandbox_state: Option<String>,
}

/// The user's projects that are not deleted (or the one project `only`, whatever its status), newest
/// first, each with its latest READY job (by completion, then creation) and that job's sandbox state. The
/// job must belong to the same user as well as to the project, so that a job filed against someone else's
/// project can never surface on their dashboard.
pub(crate) async fn summaries(
    conn: &mut PgConnection,
    user: &UserId,
    only: Option<ProjectId>,
) -> Result<Vec<ProjectSummary>, RepoError> {
    let found: Vec<SummaryRow> = sqlx::query_as(
        "SELECT p.id, p.user_id, p.name, p.description, p.github_repo, p.status, p.created_at, \
                p.last_build_version, \
                latest.id AS latest_job_id, latest.sandbox_state AS latest_sandbox_state \
         FROM projects p \
         LEFT JOIN LATERAL ( \
             SELECT j.id, j.sandbox_state FROM jobs j \
             WHERE j.project_id = p.id AND j.user_id = $1 AND j.status = $2 \
             ORDER BY j.completed_at DESC NULLS LAST, j.created_at DESC, j.id DESC \
             LIMIT 1 \
         ) latest ON true \
         WHERE p.user_id = $1 \
           AND (($4::uuid IS NULL AND p.status <> $3) OR p.id = $4) \
         ORDER BY p.created_at DESC, p.id DESC",
    )
    .bind(user.as_str())
    .bind(JobStatus::Ready.as_str())
    .bind(ProjectStatus::Deleted.as_str())
    .bind(only.map(|id| id.as_uuid()))
    .fetch_all(&mut *conn)
    .await
    .map_err(map_err)?;
    found
        .into_iter()
        .map(|r| {
            Ok(ProjectSummary {
                project: Project::try_from(r.project)?,
                latest_job_id: r.latest_job_id.map(JobId::from_uuid),
                latest_sandbox_state: r
                    .latest_sandbox_state
                    .map(|s| {
                        SandboxState::try_from(s.as_str())
                            .map_err(|e| RepoError::Corrupt(format!("jobs.sandbox_state: {e}")))
                    })
                    .transpose()?,
            })
        })
        .collect()
}
