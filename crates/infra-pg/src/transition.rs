//! Status changes: the compare-and-set transition, build version assignment and the recovery requeue.

use domain::ports::{RepoError, TransitionOutcome, TransitionUpdate};
use domain::{BuildVersion, Job, JobId, JobStatus, ProjectId, SandboxState};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::error::map_err;
use crate::jobs::current_status;
use crate::rows::{job_columns, JobRow};

/// The one compare-and-set UPDATE behind every transition. Optional fields are written when given and
/// left alone otherwise; the timestamps, the attempt count and the sandbox state follow from the move (flags
/// `$11`, `$12`, `$13`), computed from the domain's enums, which also supply every label bound here, so that
/// no status is spelled twice.
const TRANSITION_SQL: &str = concat!(
    "UPDATE jobs SET \
        status = $3, \
        status_message = COALESCE($4, status_message), \
        error_message = COALESCE($5, error_message), \
        debug_id = COALESCE($6, debug_id), \
        sandbox_id = COALESCE($7, sandbox_id), \
        preview_url = COALESCE($8, preview_url), \
        workspace_path = COALESCE($9, workspace_path), \
        build_version = COALESCE($10, build_version), \
        started_at = CASE WHEN $11 THEN COALESCE(started_at, now()) ELSE started_at END, \
        attempts = attempts + CASE WHEN $11 THEN 1 ELSE 0 END, \
        completed_at = CASE WHEN $12 THEN now() ELSE completed_at END, \
        duration_seconds = CASE WHEN $12 \
            THEN GREATEST(0, EXTRACT(EPOCH FROM now() - COALESCE(started_at, enqueued_at, created_at)))::int \
            ELSE duration_seconds END, \
        sandbox_state = CASE WHEN $13 THEN $14 ELSE sandbox_state END, \
        sandbox_paused = CASE WHEN $13 THEN false ELSE sandbox_paused END, \
        sandbox_state_version = sandbox_state_version + CASE WHEN $13 THEN 1 ELSE 0 END, \
        updated_at = now() \
     WHERE id = $1 AND status = $2 \
     RETURNING ",
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
    pool: &PgPool,
    id: JobId,
    from: JobStatus,
    to: JobStatus,
    update: TransitionUpdate,
) -> Result<TransitionOutcome, RepoError> {
    if !from.can_transition(to) {
        return Err(RepoError::IllegalTransition { from, to });
    }
    if update.assign_build_version && to == JobStatus::Ready {
        return transition_with_build_version(pool, id, from, to, &update).await;
    }
    let row = update_row(pool, id, from, to, &update, None).await?;
    match row {
        Some(row) => applied(row),
        None => Ok(TransitionOutcome::Conflict {
            current: current_status(pool, id).await?,
        }),
    }
}

/// READY with a fresh `build_v0_N`, in one transaction holding the project row's lock: a concurrent READY
/// of the same project waits here, then sees this one's version (read committed takes a new snapshot per
/// statement) and takes the next. The unique index on (project_id, build_version) backs this up.
async fn transition_with_build_version(
    pool: &PgPool,
    id: JobId,
    from: JobStatus,
    to: JobStatus,
    update: &TransitionUpdate,
) -> Result<TransitionOutcome, RepoError> {
    let mut tx = pool.begin().await.map_err(map_err)?;
    // The job's project, locked, in one round trip.
    let project: Option<Uuid> = sqlx::query_scalar(
        "SELECT p.id FROM projects p JOIN jobs j ON j.project_id = p.id WHERE j.id = $1 FOR UPDATE OF p",
    )
    .bind(id.as_uuid())
    .fetch_optional(&mut *tx)
    .await
    .map_err(map_err)?;
    let Some(project) = project else {
        // Dropping the transaction rolls it back.
        return Ok(TransitionOutcome::Conflict { current: None });
    };
    let version = next_build_version(&mut *tx, ProjectId::from_uuid(project)).await?;
    tracing::Span::current().record("build_version", version.label());
    let row = update_row(&mut *tx, id, from, to, update, Some(version)).await?;
    match row {
        Some(row) => {
            tx.commit().await.map_err(map_err)?;
            applied(row)
        }
        None => Ok(TransitionOutcome::Conflict {
            current: current_status(&mut *tx, id).await?,
        }),
    }
}

async fn update_row<'e, E: PgExecutor<'e>>(
    executor: E,
    id: JobId,
    from: JobStatus,
    to: JobStatus,
    update: &TransitionUpdate,
    build_version: Option<BuildVersion>,
) -> Result<Option<JobRow>, RepoError> {
    let leaves_queue = from == JobStatus::Queued && to.is_building();
    sqlx::query_as(TRANSITION_SQL)
        .bind(id.as_uuid())
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(update.message.as_deref())
        .bind(update.error_message.as_deref())
        .bind(update.debug_id.map(|d| d.to_string()))
        .bind(update.sandbox_id.as_ref().map(|s| s.as_str()))
        .bind(update.preview_url.as_deref())
        .bind(update.workspace_path.as_deref())
        .bind(build_version.map(BuildVersion::label))
        .bind(leaves_queue)
        .bind(to.is_terminal())
        .bind(update.sandbox_state.is_some())
        .bind(update.sandbox_state.map(SandboxState::as_str))
        .fetch_optional(executor)
        .await
        .map_err(map_err)
}

fn applied(row: JobRow) -> Result<TransitionOutcome, RepoError> {
    Ok(TransitionOutcome::Applied(Box::new(Job::try_from(row)?)))
}

/// One past the highest `build_v0_N` among the project's READY jobs, compared as numbers (v0_10 follows
/// v0_9). A stored version that does not parse is skipped with a warning rather than failing the build.
pub(crate) async fn next_build_version<'e, E: PgExecutor<'e>>(
    executor: E,
    project: ProjectId,
) -> Result<BuildVersion, RepoError> {
    let stored: Vec<String> = sqlx::query_scalar(
        "SELECT build_version FROM jobs \
         WHERE project_id = $1 AND status = $2 AND build_version IS NOT NULL",
    )
    .bind(project.as_uuid())
    .bind(JobStatus::Ready.as_str())
    .fetch_all(executor)
    .await
    .map_err(map_err)?;
    let highest = stored
        .iter()
        .filter_map(|s| {
            let parsed = BuildVersion::parse(s);
            if parsed.is_none() {
                tracing::warn!(project_id = %project, build_version = %s, "unparseable build version skipped");
            }
            parsed
        })
        .max()
        .map_or(0, |v| v.0);
    highest
        .checked_add(1)
        .map(BuildVersion)
        .ok_or_else(|| RepoError::Corrupt(format!("build version overflow in project {project}")))
}

/// Recovery, outside the transition table: a job whose worker vanished mid-build goes back to `queued`.
/// Allowed only from a building status (`IllegalTransition` otherwise, before any write); compare-and-set
/// on `from`. The sandbox fields are cleared (state `none`, version bumped) because the caller has killed
/// the old sandbox first; the stage message goes too, since it described the abandoned attempt.
pub(crate) async fn requeue(
    pool: &PgPool,
    id: JobId,
    from: JobStatus,
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
            sandbox_state = $4, \
            sandbox_paused = false, \
            sandbox_state_version = sandbox_state_version + 1, \
            updated_at = now() \
         WHERE id = $1 AND status = $2 \
         RETURNING ",
        job_columns!()
    ))
    .bind(id.as_uuid())
    .bind(from.as_str())
    .bind(JobStatus::Queued.as_str())
    .bind(SandboxState::None.as_str())
    .fetch_optional(pool)
    .await
    .map_err(map_err)?;
    match row {
        Some(row) => applied(row),
        None => Ok(TransitionOutcome::Conflict {
            current: current_status(pool, id).await?,
        }),
    }
}
