//! [`PgJobRepository`]: the [`JobRepository`] port over a Postgres pool. Each method is instrumented here
//! and delegates to the module that owns its queries.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use domain::ports::{
    Admitted, JobRepository, PageAfter, RepoError, SandboxSeconds, SandboxStateUpdate,
    TransitionOutcome, TransitionUpdate,
};
use domain::quota::DailyQuota;
use domain::{
    Job, JobId, JobStatus, NewJob, NewProject, Project, ProjectId, ProjectSummary, SandboxId,
    UserId,
};
use std::sync::Arc;

use sqlx::{PgConnection, PgPool};

use crate::connections::Connections;
use crate::error::map_err;
use crate::retry::Retry;
use crate::{jobs, project_queries, quota, sandbox, transition};

/// Jobs and projects in Postgres. Cheap to clone (clones share the pool and the connections they hold).
#[derive(Debug, Clone)]
pub struct PgJobRepository {
    connections: Arc<Connections>,
}

/// Runs one statement function on a leased connection and ends the lease with its result (see
/// [`crate::connections`]); a failure that passes (`Unavailable`) is run again on a fresh connection within
/// [`crate::retry::RETRY_FOR`], with the kept connections dropped (after a blip they are likely all dead).
/// Evaluates to the result and whether the statement was retried: a write retried after an ambiguous
/// failure may have applied the first time, which the caller then recognises.
macro_rules! retried {
    ($repo:expr, |$conn:ident| $call:expr) => {{
        let mut retry = Retry::new();
        loop {
            let result = async {
                let mut lease = $repo.connections.acquire().await.map_err(map_err)?;
                let $conn: &mut PgConnection = &mut lease;
                let result = $call.await;
                lease.finish(result)
            }
            .await;
            match result {
                Err(RepoError::Unavailable(reason)) => {
                    $repo.connections.discard_kept();
                    match retry.after_failure() {
                        Some(pause) => {
                            tracing::warn!(
                                failures = retry.failures(),
                                error = %reason,
                                "postgres statement failed; retrying"
                            );
                            tokio::time::sleep(pause).await;
                        }
                        None => break (Err(RepoError::Unavailable(reason)), true),
                    }
                }
                other => break (other, retry.retried()),
            }
        }
    }};
}

/// [`retried!`] for statements that are safe to apply twice (reads, and idempotent writes): the result
/// alone.
macro_rules! leased {
    ($repo:expr, |$conn:ident| $call:expr) => {
        retried!($repo, |$conn| $call).0
    };
}

impl PgJobRepository {
    pub fn new(pool: PgPool) -> Self {
        Self {
            connections: Connections::start(pool),
        }
    }

    /// The pool, for callers that need it alongside the repository.
    pub fn pool(&self) -> &PgPool {
        self.connections.pool()
    }

    /// One round trip to the database (for readiness checks): `Unavailable` when it does not answer.
    #[tracing::instrument(skip_all, err)]
    pub async fn ping(&self) -> Result<(), RepoError> {
        sqlx::query("SELECT 1")
            .execute(self.pool())
            .await
            .map(drop)
            .map_err(map_err)
    }
}

#[async_trait]
impl JobRepository for PgJobRepository {
    #[tracing::instrument(skip_all, fields(job_id = %job.id, project_id = %job.project_id, user_id = %job.user_id), err)]
    async fn insert_job(&self, job: &NewJob) -> Result<Job, RepoError> {
        match retried!(self, |conn| jobs::insert(conn, job)) {
            // The first try inserted it before its connection broke.
            (Err(RepoError::AlreadyExists), true) => match self.get_job(job.id).await? {
                Some(found)
                    if found.user_id == job.user_id
                        && found.project_id == job.project_id
                        && found.goal == job.goal.as_str() =>
                {
                    Ok(found)
                }
                _ => Err(RepoError::AlreadyExists),
            },
            (result, _) => result,
        }
    }

    #[tracing::instrument(skip_all, fields(job_id = %job.id, project_id = %job.project_id, user_id = %job.user_id), err)]
    async fn insert_admitted_job(
        &self,
        job: &NewJob,
        quota: DailyQuota,
    ) -> Result<Admitted, RepoError> {
        match retried!(self, |conn| quota::insert_admitted(conn, job, quota)) {
            // The first try committed before its connection broke: that insert is this one.
            (Err(RepoError::AlreadyExists), true) => match self.get_job(job.id).await? {
                Some(found)
                    if found.user_id == job.user_id
                        && found.project_id == job.project_id
                        && found.goal == job.goal.as_str() =>
                {
                    let counted_today = self.jobs_counted_on(&job.user_id, quota.day).await?;
                    Ok(Admitted::Inserted {
                        job: Box::new(found),
                        counted_today,
                    })
                }
                _ => Err(RepoError::AlreadyExists),
            },
            (result, _) => result,
        }
    }

    #[tracing::instrument(skip_all, fields(user_id = %user), err)]
    async fn jobs_counted_on(&self, user: &UserId, day: NaiveDate) -> Result<u32, RepoError> {
        leased!(self, |conn| quota::counted_on(conn, user, day))
    }

    #[tracing::instrument(skip_all, fields(job_id = %id), err)]
    async fn get_job(&self, id: JobId) -> Result<Option<Job>, RepoError> {
        leased!(self, |conn| jobs::get(conn, id))
    }

    #[tracing::instrument(skip_all, fields(job_id = %id, user_id = %user), err)]
    async fn get_job_for_user(&self, id: JobId, user: &UserId) -> Result<Option<Job>, RepoError> {
        leased!(self, |conn| jobs::get_for_user(conn, id, user))
    }

    #[tracing::instrument(
        skip_all,
        fields(job_id = %id, from = %from, to = %to, build_version = tracing::field::Empty),
        err
    )]
    async fn transition(
        &self,
        id: JobId,
        from: JobStatus,
        to: JobStatus,
        update: TransitionUpdate,
    ) -> Result<TransitionOutcome, RepoError> {
        let (outcome, retried) = retried!(self, |conn| transition::transition(
            conn, id, from, to, &update
        ));
        let outcome = outcome?;
        match outcome {
            // A retried write that lost may have lost to itself: the first try applied it unseen. Only our
            // own attempt moves a fenced job to `to`.
            TransitionOutcome::Conflict { current } if retried && current == Some(to) => {
                match (self.get_job(id).await?, update.attempt) {
                    (Some(job), Some(attempt)) if job.status == to && job.attempts == attempt => {
                        Ok(TransitionOutcome::Applied(Box::new(job)))
                    }
                    _ => Ok(TransitionOutcome::Conflict { current }),
                }
            }
            outcome => Ok(outcome),
        }
    }

    #[tracing::instrument(skip_all, fields(job_id = %id, sandbox_id = %sandbox), err)]
    async fn record_sandbox(
        &self,
        id: JobId,
        sandbox: &SandboxId,
        attempt: i32,
    ) -> Result<Option<Job>, RepoError> {
        leased!(self, |conn| sandbox::record(conn, id, sandbox, attempt))
    }

    #[tracing::instrument(
        skip_all,
        fields(job_id = %id, state = %update.state, expected_version = update.expected_version),
        err
    )]
    async fn set_sandbox_state(
        &self,
        id: JobId,
        update: SandboxStateUpdate,
    ) -> Result<Option<Job>, RepoError> {
        let (written, retried) =
            retried!(self, |conn| sandbox::set_state(conn, id, update.clone()));
        let written = written?;
        match written {
            // The first try may have written it unseen: the version moved by exactly our one write.
            None if retried => Ok(self.get_job(id).await?.filter(|job| {
                job.sandbox_state_version == update.expected_version + 1
                    && job.sandbox_state == update.state
            })),
            written => Ok(written),
        }
    }

    #[tracing::instrument(skip_all, fields(job_id = %id), err)]
    async fn touch_activity(&self, id: JobId, at: DateTime<Utc>) -> Result<(), RepoError> {
        leased!(self, |conn| jobs::touch_activity(conn, id, at))
    }

    #[tracing::instrument(skip_all, fields(job_id = %id), err)]
    async fn record_visit(
        &self,
        id: JobId,
        at: DateTime<Utc>,
        seconds: f64,
    ) -> Result<(), RepoError> {
        leased!(self, |conn| jobs::record_visit(conn, id, at, seconds))
    }

    #[tracing::instrument(skip_all, fields(job_id = %id), err)]
    async fn sandbox_seconds(&self, id: JobId) -> Result<Option<SandboxSeconds>, RepoError> {
        leased!(self, |conn| jobs::sandbox_seconds(conn, id))
    }

    #[tracing::instrument(skip_all, fields(job_id = %id, from = %from), err)]
    async fn requeue_job(
        &self,
        id: JobId,
        from: JobStatus,
        attempt: i32,
    ) -> Result<TransitionOutcome, RepoError> {
        let (outcome, retried) =
            retried!(self, |conn| transition::requeue(conn, id, from, attempt));
        let outcome = outcome?;
        match outcome {
            TransitionOutcome::Conflict { current }
                if retried && current == Some(JobStatus::Queued) =>
            {
                match self.get_job(id).await? {
                    Some(job) if job.attempts == attempt && job.sandbox_id.is_none() => {
                        Ok(TransitionOutcome::Applied(Box::new(job)))
                    }
                    _ => Ok(TransitionOutcome::Conflict { current }),
                }
            }
            outcome => Ok(outcome),
        }
    }

    #[tracing::instrument(skip_all, fields(user_id = %user, limit), err)]
    async fn list_jobs_for_user(&self, user: &UserId, limit: i64) -> Result<Vec<Job>, RepoError> {
        leased!(self, |conn| jobs::list_for_user(conn, user, limit))
    }

    #[tracing::instrument(skip_all, fields(project_id = %project), err)]
    async fn list_jobs_for_project(&self, project: ProjectId) -> Result<Vec<Job>, RepoError> {
        leased!(self, |conn| jobs::list_for_project(conn, project))
    }

    #[tracing::instrument(skip_all, fields(status = %status, limit), err)]
    async fn list_jobs_by_status(
        &self,
        status: JobStatus,
        after: Option<PageAfter>,
        limit: i64,
    ) -> Result<Vec<Job>, RepoError> {
        leased!(self, |conn| jobs::list_by_status(
            conn, status, after, limit
        ))
    }

    #[tracing::instrument(skip_all, fields(limit), err)]
    async fn jobs_needing_attention(
        &self,
        after: Option<PageAfter>,
        limit: i64,
    ) -> Result<Vec<Job>, RepoError> {
        leased!(self, |conn| sandbox::needing_attention(conn, after, limit))
    }

    #[tracing::instrument(skip_all, fields(sandbox_id = %sandbox), err)]
    async fn find_job_by_sandbox(&self, sandbox: &SandboxId) -> Result<Option<Job>, RepoError> {
        leased!(self, |conn| sandbox::find_by_sandbox(conn, sandbox))
    }

    #[tracing::instrument(skip_all, fields(project_id = %project.id, user_id = %project.user_id), err)]
    async fn create_project(&self, project: &NewProject) -> Result<Project, RepoError> {
        match retried!(self, |conn| project_queries::create(conn, project)) {
            // The first try created it before its connection broke.
            (Err(RepoError::AlreadyExists), true) => self
                .get_project_for_user(project.id, &project.user_id)
                .await?
                .filter(|p| p.name == project.name)
                .ok_or(RepoError::AlreadyExists),
            (result, _) => result,
        }
    }

    #[tracing::instrument(skip_all, fields(project_id = %id, user_id = %user), err)]
    async fn get_project_for_user(
        &self,
        id: ProjectId,
        user: &UserId,
    ) -> Result<Option<Project>, RepoError> {
        leased!(self, |conn| project_queries::get_for_user(conn, id, user))
    }

    #[tracing::instrument(skip_all, fields(user_id = %user), err)]
    async fn list_projects(&self, user: &UserId) -> Result<Vec<ProjectSummary>, RepoError> {
        leased!(self, |conn| project_queries::summaries(conn, user, None))
    }

    #[tracing::instrument(skip_all, fields(project_id = %id, user_id = %user), err)]
    async fn get_project_summary(
        &self,
        id: ProjectId,
        user: &UserId,
    ) -> Result<Option<ProjectSummary>, RepoError> {
        let found = leased!(self, |conn| project_queries::summaries(
            conn,
            user,
            Some(id)
        ))?;
        Ok(found.into_iter().next())
    }

    #[tracing::instrument(skip_all, fields(project_id = %id, user_id = %user), err)]
    async fn delete_project(
        &self,
        id: ProjectId,
        user: &UserId,
    ) -> Result<Option<Project>, RepoError> {
        leased!(self, |conn| project_queries::delete(conn, id, user))
    }
}
