//! Inserting, reading, listing and counting job rows.

use chrono::{DateTime, NaiveDate, Utc};
use domain::ports::{PageAfter, RepoError, SandboxSeconds};
use domain::{Job, JobId, JobStatus, NewJob, ProjectId, SandboxState, UserId};
use sqlx::{PgConnection, PgPool};

use crate::error::map_err;
use crate::rows::{self, job_columns, JobRow};
use crate::sandbox::state_labels;

/// Inserts only when the project exists and belongs to the job's user: a job can never be filed under
/// another user's project (the Python service allowed that, and the job then showed on their dashboard).
/// Either case reads as `NotFound`, as a missing project does. The foreign key still guards a project
/// deleted between the check and the insert (also `NotFound`, via [`map_err`]).
pub(crate) async fn insert(conn: &mut PgConnection, job: &NewJob) -> Result<Job, RepoError> {
    insert_counted(conn, job, None).await
}

/// [`insert`], the job counted against `counted_on` in the daily quota (see [`crate::quota`]).
pub(crate) async fn insert_counted(
    conn: &mut PgConnection,
    job: &NewJob,
    counted_on: Option<NaiveDate>,
) -> Result<Job, RepoError> {
    let row: Option<JobRow> = sqlx::query_as(concat!(
        "INSERT INTO jobs (id, project_id, user_id, tier, goal, status, status_message, enqueued_at, \
                           counted_on) \
         SELECT $1, p.id, $3, $4, $5, $6, $7, now(), $8 FROM projects p \
         WHERE p.id = $2 AND p.user_id = $3 \
         RETURNING ",
        job_columns!()
    ))
    .bind(job.id.as_uuid())
    .bind(job.project_id.as_uuid())
    .bind(job.user_id.as_str())
    .bind(job.tier.as_str())
    .bind(job.goal.as_str())
    .bind(job.status.as_str())
    .bind(job.status_message.as_deref())
    .bind(counted_on)
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_err)?;
    rows::job_opt(row)?.ok_or(RepoError::NotFound)
}

pub(crate) async fn get(conn: &mut PgConnection, id: JobId) -> Result<Option<Job>, RepoError> {
    let row: Option<JobRow> = sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE id = $1"
    ))
    .bind(id.as_uuid())
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_err)?;
    rows::job_opt(row)
}

pub(crate) async fn get_for_user(
    conn: &mut PgConnection,
    id: JobId,
    user: &UserId,
) -> Result<Option<Job>, RepoError> {
    let row: Option<JobRow> = sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE id = $1 AND user_id = $2"
    ))
    .bind(id.as_uuid())
    .bind(user.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_err)?;
    rows::job_opt(row)
}

/// The current status alone (to report what a lost compare-and-set lost to).
pub(crate) async fn current_status(
    conn: &mut PgConnection,
    id: JobId,
) -> Result<Option<JobStatus>, RepoError> {
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
        .bind(id.as_uuid())
        .fetch_optional(conn)
        .await
        .map_err(map_err)?;
    status.as_deref().map(rows::parse_status).transpose()
}

/// Moves `last_activity_at` forward only: a late, older touch never hides a newer one. `updated_at` is left
/// alone, because activity is not a change to the record.
/// Activity now, and `seconds` more with a visitor.
pub(crate) async fn record_visit(
    conn: &mut PgConnection,
    id: JobId,
    at: DateTime<Utc>,
    seconds: f64,
) -> Result<(), RepoError> {
    sqlx::query(
        "UPDATE jobs SET last_activity_at = GREATEST(COALESCE(last_activity_at, $2), $2), \
                sandbox_visited_seconds = sandbox_visited_seconds + $3 \
         WHERE id = $1",
    )
    .bind(id.as_uuid())
    .bind(at)
    .bind(seconds)
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// Billed seconds (the spell in progress included) and visited seconds of one job.
pub(crate) async fn sandbox_seconds(
    conn: &mut PgConnection,
    id: JobId,
) -> Result<Option<SandboxSeconds>, RepoError> {
    let row: Option<(f64, f64)> = sqlx::query_as(
        "SELECT sandbox_billed_seconds \
                + COALESCE(EXTRACT(EPOCH FROM now() - sandbox_billing_since), 0)::float8, \
                sandbox_visited_seconds \
         FROM jobs WHERE id = $1",
    )
    .bind(id.as_uuid())
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_err)?;
    Ok(row.map(|(billed, visited)| SandboxSeconds { billed, visited }))
}

pub(crate) async fn touch_activity(
    conn: &mut PgConnection,
    id: JobId,
    at: DateTime<Utc>,
) -> Result<(), RepoError> {
    let done = sqlx::query(
        "UPDATE jobs SET last_activity_at = GREATEST(COALESCE(last_activity_at, $2), $2) WHERE id = $1",
    )
    .bind(id.as_uuid())
    .bind(at)
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(RepoError::NotFound);
    }
    Ok(())
}

pub(crate) async fn list_for_user(
    conn: &mut PgConnection,
    user: &UserId,
    limit: i64,
) -> Result<Vec<Job>, RepoError> {
    let found: Vec<JobRow> = sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
    ))
    .bind(user.as_str())
    .bind(limit.max(0))
    .fetch_all(&mut *conn)
    .await
    .map_err(map_err)?;
    rows::jobs(found)
}

pub(crate) async fn list_for_project(
    conn: &mut PgConnection,
    project: ProjectId,
) -> Result<Vec<Job>, RepoError> {
    let found: Vec<JobRow> = sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE project_id = $1 ORDER BY created_at DESC, id DESC"
    ))
    .bind(project.as_uuid())
    .fetch_all(&mut *conn)
    .await
    .map_err(map_err)?;
    rows::jobs(found)
}

/// One page, oldest first (the queue is rebuilt and scheduled jobs are promoted in submission order), read
/// in the order of the `jobs_status_created_idx` index: each page starts where the last one ended.
pub(crate) async fn list_by_status(
    conn: &mut PgConnection,
    status: JobStatus,
    after: Option<PageAfter>,
    limit: i64,
) -> Result<Vec<Job>, RepoError> {
    let (after_at, after_id) = rows::page_after(after);
    let found: Vec<JobRow> = sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE status = $1 AND (created_at, id) > ($3, $4) \
          ORDER BY created_at, id LIMIT $2"
    ))
    .bind(status.as_str())
    .bind(limit.max(0))
    .bind(after_at)
    .bind(after_id)
    .fetch_all(&mut *conn)
    .await
    .map_err(map_err)?;
    rows::jobs(found)
}

/// Operational counts of the jobs table, read at metrics scrape time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobCounts {
    /// Jobs per status label.
    pub by_status: Vec<(String, i64)>,
    /// READY jobs whose sandbox the provider may be billing for (live and not paused): integrated over time,
    /// the sandbox-seconds spent after READY.
    pub ready_unpaused: i64,
    /// How long the job queued longest has waited since it last entered the queue (0 with none queued).
    pub oldest_queued_seconds: f64,
    /// Of those READY jobs whose sandbox may be billing, the longest any has gone without a reason to run
    /// (since READY, its last resume or its last preview activity; 0 with none): past the pause policy's
    /// idle time, a pause that should have happened has not.
    pub ready_unpaused_idle_seconds: f64,
    /// Sandbox-seconds billed, every build, the spells in progress included.
    pub sandbox_billed_seconds: f64,
    /// Sandbox-seconds with a visitor on the preview, every build.
    pub sandbox_visited_seconds: f64,
}

/// Every figure in one scan of the table. A queued job's `updated_at` is when it last entered the queue
/// (submitted, requeued or promoted): nothing else writes a queued job.
pub async fn count_jobs(pool: &PgPool) -> Result<JobCounts, RepoError> {
    let rows: Vec<(String, i64, i64, f64, f64)> = sqlx::query_as(
        "SELECT status, count(*), count(*) FILTER (WHERE sandbox_state = ANY($1)), \
                COALESCE(EXTRACT(EPOCH FROM now() - min(updated_at)), 0)::float8, \
                COALESCE(EXTRACT(EPOCH FROM now() - min(GREATEST(completed_at, resumed_at, last_activity_at)) \
                    FILTER (WHERE sandbox_state = ANY($1))), 0)::float8 \
         FROM jobs GROUP BY status",
    )
    .bind(state_labels(SandboxState::is_live_unpaused))
    .fetch_all(pool)
    .await
    .map_err(map_err)?;
    let (billed, visited): (f64, f64) = sqlx::query_as(
        "SELECT COALESCE(sum(sandbox_billed_seconds \
                    + COALESCE(EXTRACT(EPOCH FROM now() - sandbox_billing_since), 0)), 0)::float8, \
                COALESCE(sum(sandbox_visited_seconds), 0)::float8 \
         FROM jobs",
    )
    .fetch_one(pool)
    .await
    .map_err(map_err)?;
    let of = |status: JobStatus| rows.iter().find(|row| row.0 == status.as_str());
    Ok(JobCounts {
        sandbox_billed_seconds: billed,
        sandbox_visited_seconds: visited,
        ready_unpaused: of(JobStatus::Ready).map_or(0, |row| row.2),
        oldest_queued_seconds: of(JobStatus::Queued).map_or(0.0, |row| row.3.max(0.0)),
        ready_unpaused_idle_seconds: of(JobStatus::Ready).map_or(0.0, |row| row.4.max(0.0)),
        by_status: rows.iter().map(|row| (row.0.clone(), row.1)).collect(),
    })
}
