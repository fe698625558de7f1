//! Status changes: the compare-and-set transition, build version assignment and the recovery requeue.

use domain::ports::{RepoError, TransitionOutcome, TransitionUpdate};
use domain::{BuildVersion, Job, JobId, JobStatus, SandboxState};
use sqlx::PgConnection;

use crate::error::map_err;
use crate::jobs::current_status;
use crate::rows::{job_columns, JobRow};

/// The one compare-and-set UPDATE behind every transition, with the expression that sets `build_version`.
/// Optional fields are written when given and left alone otherwise; the timestamps, the attempt count and
/// the sandbox state follow from the move (flags `$10`, `$11`, `$12`), computed from the domain's enums,
/// which also supply every label bound here, so that no status is spelled twice. `$15`, when not null, is
/// the build's fencing token: the row must still be at that attempt. `$16` sets the day the job counts
/// against in the daily quota (a promotion), `$17` clears it (a refund). `$18` is when the provider stops the
/// sandbox, written when given.
macro_rules! transition_update {
    ($build_version:literal) => {
        concat!(
            "UPDATE jobs SET \
                status = $3, \
                status_message = COALESCE($4, status_message), \
                error_message = COALESCE($5, error_message), \
                debug_id = COALESCE($6, debug_id), \
                sandbox_id = COALESCE($7, sandbox_id), \
                preview_url = COALESCE($8, preview_url), \
                workspace_path = COALESCE($9, workspace_path), \
                sandbox_expires_at = COALESCE($18, sandbox_expires_at), \
                counted_on = CASE WHEN $17 THEN NULL ELSE COALESCE($16, counted_on) END, \
                build_version = ",
            $build_version,
            ", \
                started_at = CASE WHEN $10 THEN COALESCE(started_at, now()) ELSE started_at END, \
                attempts = attempts + CASE WHEN $10 THEN 1 ELSE 0 END, \
                completed_at = CASE WHEN $11 THEN now() ELSE completed_at END, \
                duration_seconds = CASE WHEN $11 \
                    THEN GREATEST(0, EXTRACT(EPOCH FROM now() - COALESCE(started_at, enqueued_at, created_at)))::int \
                    ELSE duration_seconds END, \
                sandbox_state = CASE WHEN $12 THEN $13 ELSE sandbox_state END, \
                sandbox_paused = CASE WHEN $12 THEN false ELSE sandbox_paused END, \
                sandbox_state_version = sandbox_state_version + CASE WHEN $12 THEN 1 ELSE 0 END, \
                updated_at = now() \
             WHERE id = $1 AND status = $2 AND ($15::int IS NULL OR attempts = $15) "
        )
    };
}

const TRANSITION_SQL: &str = concat!(
    transition_update!("build_version"),
    "RETURNING ",
    job_columns!()
);

/// READY with the project's next build version, in one statement. `locked` takes the job's row lock and,
/// if another transaction changed the job first, re-reads it: it is empty when the job has left `from`.
/// Only then does `version` increment the project's counter, under that row's lock: a concurrent READY of the
/// same project waits, then increments the value the other one committed. The UPDATE applies only with a
/// version, so a lost race neither moves the job nor spends a number (the counter is untouched). The unique
/// index on (project_id, build_version) backs this up. `$14` is the label's prefix, from the domain.
const READY_SQL: &str = concat!(
    "WITH locked AS (SELECT project_id FROM jobs \
                     WHERE id = $1 AND status = $2 AND ($15::int IS NULL OR attempts = $15) FOR UPDATE), \
          version AS (UPDATE projects SET last_build_version = last_build_version + 1 \
                      WHERE id = (SELECT project_id FROM locked) RETURNING last_build_version) ",
    transition_update!("$14 || (SELECT last_build_version FROM version)"),
    "AND EXISTS (SELECT 1 FROM version) RETURNING ",
    job_columns!()
);

/// See [`domain::ports::JobRepository::transition`].
///
/// Leaving the queue for a worker counts an attempt (in the same write, so a build costs no extra round
/// trip for it) and sets started_at the first time (a requeued job keeps its first start, so
/// duration_seconds counts every attempt); completed_at and duration_seconds on a terminal move.
/// `assign_build_version` is honoured with a move to READY only: the version counts READY jobs, so one given
/// on any other move would be handed out twice.
pub(crate) async fn transition(
    conn: &mut PgConnection,
    id: JobId,
    from: JobStatus,
    to: JobStatus,
    update: &TransitionUpdate,
) -> Result<TransitionOutcome, RepoError> {
    if !from.can_transition(to) {
        return Err(RepoError::IllegalTransition { from, to });
    }
    let assign_version = update.assign_build_version && to == JobStatus::Ready;
    let row = update_row(&mut *conn, id, from, to, update, assign_version).await?;
    match row {
        Some(row) => applied(row),
        None => Ok(TransitionOutcome::Conflict {
            current: current_status(&mut *conn, id).await?,
        }),
    }
}

async fn update_row(
    conn: &mut PgConnection,
    id: JobId,
    from: JobStatus,
    to: JobStatus,
    update: &TransitionUpdate,
    assign_version: bool,
) -> Result<Option<JobRow>, RepoError> {
    let leaves_queue = from == JobStatus::Queued && to.is_building();
    let sql = if assign_version {
        READY_SQL
    } else {
        TRANSITION_SQL
    };
    sqlx::query_as(sql)
        .bind(id.as_uuid())
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(update.message.as_deref())
        .bind(update.error_message.as_deref())
        .bind(update.debug_id.map(|d| d.to_string()))
        .bind(update.sandbox_id.as_ref().map(|s| s.as_str()))
        .bind(update.preview_url.as_deref())
        .bind(update.workspace_path.as_deref())
        .bind(leaves_queue)
        .bind(to.is_terminal())
        .bind(update.sandbox_state.is_some())
        .bind(update.sandbox_state.map(SandboxState::as_str))
        // Read by READY_SQL only; one bind list serves both statements.
        .bind(BuildVersion::PREFIX)
        .bind(update.attempt)
        .bind(update.counted_on)
        .bind(update.refund_quota)
        .bind(update.sandbox_expires_at)
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_err)
}

fn applied(row: JobRow) -> Result<TransitionOutcome, RepoError> {
    Ok(TransitionOutcome::Applied(Box::new(Job::try_from(row)?)))
}

/// Recovery, outside the transition table: a job whose worker vanished mid-build goes back to `queued`.
/// Allowed only from a building status (`IllegalTransition` otherwise, before any write); compare-and-set
/// on `from` and on `attempt`, the attempt being abandoned. The sandbox fields are cleared (state `none`, version bumped) because the caller has killed
/// the old sandbox first; the stage message goes too, since it described the abandoned attempt.
pub(crate) async fn requeue(
    conn: &mut PgConnection,
    id: JobId,
    from: JobStatus,
    attempt: i32,
) -> Result<TransitionOutcome, RepoError> {
    if !from.is_building() {
        return Err(RepoError::IllegalTransition {
            from,
            to: JobStatus::Queued,
        });
    }
    let row: Option<JobRow> = sqlx::query_as(concat!(
        "UPDATE jobs SET \
            status = $3, \
            status_message = NULL, \
            sandbox_id = NULL, \
            preview_url = NULL, \
            workspace_path = NULL, \
            sandbox_expires_at = NULL, \
            sandbox_state = $4, \
            sandbox_paused = false, \
            sandbox_state_version = sandbox_state_version + 1, \
            updated_at = now() \
         WHERE id = $1 AND status = $2 AND attempts = $5 \
         RETURNING ",
        job_columns!()
    ))
    .bind(id.as_uuid())
    .bind(from.as_str())
    .bind(JobStatus::Queued.as_str())
    .bind(SandboxState::None.as_str())
    .bind(attempt)
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_err)?;
    match row {
        Some(row) => applied(row),
        None => Ok(TransitionOutcome::Conflict {
            current: current_status(&mut *conn, id).await?,
        }),
    }
}
