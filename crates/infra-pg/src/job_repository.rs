//! [`PgJobRepository`]: the [`JobRepository`] port over a Postgres pool. Each method is instrumented here
//! and delegates to the module that owns its queries.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::ports::{
    JobRepository, RepoError, SandboxStateUpdate, TransitionOutcome, TransitionUpdate,
};
use domain::{
    Job, JobId, JobStatus, NewJob, NewProject, Project, ProjectId, ProjectSummary, SandboxId,
    UserId,
};
use std::sync::Arc;

use sqlx::{PgConnection, PgPool};

use crate::connections::Connections;
use crate::error::map_err;
use crate::{jobs, project_queries, sandbox, transition};

/// Jobs and projects in Postgres. Cheap to clone (clones share the pool and the connections they hold).
#[derive(Debug, Clone)]
pub struct PgJobRepository {
    connections: Arc<Connections>,
}

/// Runs one statement function on a leased connection and ends the lease with its result
/// (see [`crate::connections`]).
macro_rules! leased {
    ($repo:expr, |$conn:ident| $call:expr) => {{
        let mut lease = $repo.connections.acquire().await.map_err(map_err)?;
        let $conn: &mut PgConnection = &mut lease;
        let result = $call.await;
        lease.finish(result)
    }};
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
        leased!(self, |conn| jobs::insert(conn, job))
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
        leased!(self, |conn| transition::transition(
            conn, id, from, to, update
        ))
    }

    #[tracing::instrument(skip_all, fields(job_id = %id, sandbox_id = %sandbox), err)]
    async fn record_sandbox(&self, id: JobId, sandbox: &SandboxId) -> Result<Job, RepoError> {
        leased!(self, |conn| sandbox::record(conn, id, sandbox))
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
        leased!(self, |conn| sandbox::set_state(conn, id, update))
    }

    #[tracing::instrument(skip_all, fields(job_id = %id), err)]
    async fn touch_activity(&self, id: JobId, at: DateTime<Utc>) -> Result<(), RepoError> {
        leased!(self, |conn| jobs::touch_activity(conn, id, at))
    }

    #[tracing::instrument(skip_all, fields(job_id = %id, from = %from), err)]
    async fn requeue_job(
        &self,
        id: JobId,
        from: JobStatus,
    ) -> Result<TransitionOutcome, RepoError> {
        leased!(self, |conn| transition::requeue(conn, id, from))
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
        limit: i64,
    ) -> Result<Vec<Job>, RepoError> {
        leased!(self, |conn| jobs::list_by_status(conn, status, limit))
    }

    #[tracing::instrument(skip_all, fields(limit), err)]
    async fn jobs_needing_attention(&self, limit: i64) -> Result<Vec<Job>, RepoError> {
        leased!(self, |conn| sandbox::needing_attention(conn, limit))
    }

    #[tracing::instrument(skip_all, fields(sandbox_id = %sandbox), err)]
    async fn find_job_by_sandbox(&self, sandbox: &SandboxId) -> Result<Option<Job>, RepoError> {
        leased!(self, |conn| sandbox::find_by_sandbox(conn, sandbox))
    }

    #[tracing::instrument(skip_all, fields(project_id = %project.id, user_id = %project.user_id), err)]
    async fn create_project(&self, project: &NewProject) -> Result<Project, RepoError> {
        leased!(self, |conn| project_queries::create(conn, project))
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
        leased!(self, |conn| project_queries::list(conn, user))
    }
}
