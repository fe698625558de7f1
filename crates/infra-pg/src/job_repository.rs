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
use sqlx::PgPool;

use crate::error::map_err;
use crate::{jobs, project_queries, sandbox, transition};

/// Jobs and projects in Postgres. Cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct PgJobRepository {
    pool: PgPool,
}

impl PgJobRepository {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The pool, for callers that need it alongside the repository.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// One round trip to the database (for readiness checks): `Unavailable` when it does not answer.
    #[tracing::instrument(skip_all, err)]
    pub async fn ping(&self) -> Result<(), RepoError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(map_err)
    }
}

#[async_trait]
impl JobRepository for PgJobRepository {
    #[tracing::instrument(skip_all, fields(job_id = %job.id, project_id = %job.project_id, user_id = %job.user_id), err)]
    async fn insert_job(&self, job: &NewJob) -> Result<Job, RepoError> {
        jobs::insert(&self.pool, job).await
    }

    #[tracing::instrument(skip_all, fields(job_id = %id), err)]
    async fn get_job(&self, id: JobId) -> Result<Option<Job>, RepoError> {
        jobs::get(&self.pool, id).await
    }

    #[tracing::instrument(skip_all, fields(job_id = %id, user_id = %user), err)]
    async fn get_job_for_user(&self, id: JobId, user: &UserId) -> Result<Option<Job>, RepoError> {
        jobs::get_for_user(&self.pool, id, user).await
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
        transition::transition(&self.pool, id, from, to, update).await
    }

    #[tracing::instrument(skip_all, fields(job_id = %id, sandbox_id = %sandbox), err)]
    async fn record_sandbox(&self, id: JobId, sandbox: &SandboxId) -> Result<Job, RepoError> {
        sandbox::record(&self.pool, id, sandbox).await
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
        sandbox::set_state(&self.pool, id, update).await
    }

    #[tracing::instrument(skip_all, fields(job_id = %id), err)]
    async fn touch_activity(&self, id: JobId, at: DateTime<Utc>) -> Result<(), RepoError> {
        jobs::touch_activity(&self.pool, id, at).await
    }

    #[tracing::instrument(skip_all, fields(job_id = %id, from = %from), err)]
    async fn requeue_job(
        &self,
        id: JobId,
        from: JobStatus,
    ) -> Result<TransitionOutcome, RepoError> {
        transition::requeue(&self.pool, id, from).await
    }

    #[tracing::instrument(skip_all, fields(user_id = %user, limit), err)]
    async fn list_jobs_for_user(&self, user: &UserId, limit: i64) -> Result<Vec<Job>, RepoError> {
        jobs::list_for_user(&self.pool, user, limit).await
    }

    #[tracing::instrument(skip_all, fields(project_id = %project), err)]
    async fn list_jobs_for_project(&self, project: ProjectId) -> Result<Vec<Job>, RepoError> {
        jobs::list_for_project(&self.pool, project).await
    }

    #[tracing::instrument(skip_all, fields(status = %status, limit), err)]
    async fn list_jobs_by_status(
        &self,
        status: JobStatus,
        limit: i64,
    ) -> Result<Vec<Job>, RepoError> {
        jobs::list_by_status(&self.pool, status, limit).await
    }

    #[tracing::instrument(skip_all, fields(limit), err)]
    async fn jobs_needing_attention(&self, limit: i64) -> Result<Vec<Job>, RepoError> {
        sandbox::needing_attention(&self.pool, limit).await
    }

    #[tracing::instrument(skip_all, fields(sandbox_id = %sandbox), err)]
    async fn find_job_by_sandbox(&self, sandbox: &SandboxId) -> Result<Option<Job>, RepoError> {
        sandbox::find_by_sandbox(&self.pool, sandbox).await
    }

    #[tracing::instrument(skip_all, fields(project_id = %project.id, user_id = %project.user_id), err)]
    async fn create_project(&self, project: &NewProject) -> Result<Project, RepoError> {
        project_queries::create(&self.pool, project).await
    }

    #[tracing::instrument(skip_all, fields(project_id = %id, user_id = %user), err)]
    async fn get_project_for_user(
        &self,
        id: ProjectId,
        user: &UserId,
    ) -> Result<Option<Project>, RepoError> {
        project_queries::get_for_user(&self.pool, id, user).await
    }

    #[tracing::instrument(skip_all, fields(user_id = %user), err)]
    async fn list_projects(&self, user: &UserId) -> Result<Vec<ProjectSummary>, RepoError> {
        project_queries::list(&self.pool, user).await
    }
}
