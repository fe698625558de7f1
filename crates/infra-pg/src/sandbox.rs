//! The sandbox side of a job row: recording it, its versioned state, and finding jobs by sandbox.

use domain::ports::{PageAfter, RepoError, SandboxStateUpdate};
use domain::{Job, JobId, JobStatus, SandboxId, SandboxState};
use sqlx::PgConnection;

use crate::error::map_err;
use crate::rows::{self, job_columns, JobRow};

/// See [`domain::ports::JobRepository::record_sandbox`]: the id is written the moment the sandbox exists,
/// with state `running` and the version bumped, while the job is at the build's `attempt`. `None` when the
/// job is gone or at another attempt.
pub(crate) async fn record(
    conn: &mut PgConnection,
    id: JobId,
    sandbox: &SandboxId,
    attempt: i32,
) -> Result<Option<Job>, RepoError> {
    let row: Option<JobRow> = sqlx::query_as(concat!(
        "UPDATE jobs SET \
            sandbox_id = $2, \
            sandbox_state = $3, \
            sandbox_paused = false, \
            sandbox_state_version = sandbox_state_version + 1, \
            updated_at = now() \
         WHERE id = $1 AND attempts = $4 \
         RETURNING ",
        job_columns!()
    ))
    .bind(id.as_uuid())
    .bind(sandbox.as_str())
    .bind(SandboxState::Running.as_str())
    .bind(attempt)
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_err)?;
    rows::job_opt(row)
}

/// Compare-and-set on `sandbox_state_version`. sandbox_paused is written from the same state in the same
/// statement (and the schema's check constraint holds the two together). paused_at is stamped on a move to
/// paused; resumed_at on a move to running from paused or resuming (not on the first start, nor on a pause
/// that was abandoned: those are not resumes). sandbox_expires_at is written when the update carries it and
/// cleared by a move to paused or to a dead state.
pub(crate) async fn set_state(
    conn: &mut PgConnection,
    id: JobId,
    update: SandboxStateUpdate,
) -> Result<Option<Job>, RepoError> {
    let state = update.state;
    let row: Option<JobRow> = sqlx::query_as(concat!(
        "UPDATE jobs SET \
            resumed_at = CASE WHEN $5 AND sandbox_state = ANY($6) THEN now() ELSE resumed_at END, \
            sandbox_state = $3, \
            sandbox_paused = $4, \
            sandbox_state_version = sandbox_state_version + 1, \
            paused_at = CASE WHEN $4 THEN now() ELSE paused_at END, \
            preview_url = COALESCE($7, preview_url), \
            sandbox_expires_at = CASE WHEN $9 THEN NULL ELSE COALESCE($8, sandbox_expires_at) END, \
            updated_at = now() \
         WHERE id = $1 AND sandbox_state_version = $2 \
         RETURNING ",
        job_columns!()
    ))
    .bind(id.as_uuid())
    .bind(update.expected_version)
    .bind(state.as_str())
    .bind(state.is_paused())
    .bind(state == SandboxState::Running)
    .bind([
        SandboxState::Paused.as_str(),
        SandboxState::Resuming.as_str(),
    ])
    .bind(update.preview_url.as_deref())
    .bind(update.expires_at)
    .bind(state.is_paused() || !state.is_live())
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_err)?;
    rows::job_opt(row)
}

/// The reconciler's work list, a page at a time in (created_at, id) order: READY jobs whose sandbox is live
/// and not paused (running, pausing, pause_failed, and resuming, so that a resume cut short by a crash is
/// re-paused too), and failed jobs whose sandbox is live in any state (paused included: it should be
/// killed). The partial index `jobs_sandbox_attention_idx` holds the first kind.
pub(crate) async fn needing_attention(
    conn: &mut PgConnection,
    after: Option<PageAfter>,
    limit: i64,
) -> Result<Vec<Job>, RepoError> {
    let unpaused_live = state_labels(SandboxState::is_live_unpaused);
    let live = state_labels(SandboxState::is_live);
    let (after_at, after_id) = rows::page_after(after);
    let found: Vec<JobRow> = sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs \
          WHERE sandbox_id IS NOT NULL \
            AND ((status = $1 AND sandbox_state = ANY($2)) OR (status = $3 AND sandbox_state = ANY($4))) \
            AND (created_at, id) > ($6, $7) \
          ORDER BY created_at, id \
          LIMIT $5"
    ))
    .bind(JobStatus::Ready.as_str())
    .bind(&unpaused_live)
    .bind(JobStatus::Failed.as_str())
    .bind(&live)
    .bind(limit.max(0))
    .bind(after_at)
    .bind(after_id)
    .fetch_all(&mut *conn)
    .await
    .map_err(map_err)?;
    rows::jobs(found)
}

/// The newest job that owns this sandbox (a sandbox belongs to one job; newest wins should a provider ever
/// reuse an id).
pub(crate) async fn find_by_sandbox(
    conn: &mut PgConnection,
    sandbox: &SandboxId,
) -> Result<Option<Job>, RepoError> {
    let row: Option<JobRow> = sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE sandbox_id = $1 ORDER BY created_at DESC, id DESC LIMIT 1"
    ))
    .bind(sandbox.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_err)?;
    rows::job_opt(row)
}

/// The labels of the sandbox states `keep` selects, to bind as a text array (`sandbox_state = ANY($n)`).
pub(crate) fn state_labels(keep: impl Fn(SandboxState) -> bool) -> Vec<&'static str> {
    SandboxState::ALL
        .into_iter()
        .filter(|s| keep(*s))
        .map(SandboxState::as_str)
        .collect()
}
