//! The durable record: Postgres is the system of record for jobs and projects.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

use crate::quota::DailyQuota;
use crate::{
    DebugId, Job, JobId, JobStatus, NewJob, NewProject, Project, ProjectId, ProjectSummary,
    SandboxId, SandboxState, UserId,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepoError {
    /// No such row.
    #[error("not found")]
    NotFound,
    /// A row with this id (or unique key) exists already.
    #[error("already exists")]
    AlreadyExists,
    /// The move is not in the transition table (a programming error, caught before any write).
    #[error("transition {from} -> {to} is not allowed")]
    IllegalTransition { from: JobStatus, to: JobStatus },
    /// The database could not be reached or failed; the caller may retry.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A stored value no longer parses (a bug or a manual edit).
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// The fields written together with a status change, in the same statement.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TransitionUpdate {
    pub message: Option<String>,
    pub error_message: Option<String>,
    pub debug_id: Option<DebugId>,
    pub sandbox_id: Option<SandboxId>,
    pub preview_url: Option<String>,
    pub workspace_path: Option<String>,
    /// With a move to READY: assign the project's next `build_v0_N` in the same transaction, without a race.
    pub assign_build_version: bool,
    /// The sandbox's state from now on, version bumped. `running` with the move to code, which records the
    /// sandbox just created (with `sandbox_id`); with a move to READY, `running`, or `pausing` when the
    /// policy pauses at once (in the READY write itself: one write less between READY and paused). A paused
    /// state is never written here: only the provider's confirmation records that.
    pub sandbox_state: Option<SandboxState>,
    /// When the provider stops the sandbox (the time just before its timeout was set, plus that timeout):
    /// written when set, with the write that records the sandbox running.
    pub sandbox_expires_at: Option<DateTime<Utc>>,
    /// The build's fencing token, its attempt: when set, the write applies only while the job's `attempts`
    /// is still this one, so that a build whose job has moved on to another attempt (a stalled worker that
    /// lost its lease) can never write over the new one. `None` for writes that win whatever the attempt
    /// (a cancel, a promotion, the first move of a build, which counts the attempt).
    pub attempt: Option<i32>,
    /// The UTC day the job counts against in the daily quota, from now on: set by a promotion (a scheduled
    /// job counts against the day it is queued).
    pub counted_on: Option<NaiveDate>,
    /// The job stops counting against the daily quota: a submit refused after its insert (the queue was
    /// full) costs nothing.
    pub refund_quota: bool,
}

/// What [`JobRepository::insert_admitted_job`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Admitted {
    /// Inserted, `queued` or `scheduled`; `counted_today` is the founder's count for the quota's day, this
    /// job included when it was queued.
    Inserted { job: Box<Job>, counted_today: u32 },
    /// Nothing inserted: the founder already has `scheduled` jobs waiting, the cap.
    TooManyScheduled { scheduled: u32 },
}

/// Where a page of a listing starts: just after this job, in the listings' order (created_at, then id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageAfter {
    pub created_at: DateTime<Utc>,
    pub id: JobId,
}

impl PageAfter {
    /// The cursor after `job`: where the page following the one `job` ended starts.
    pub fn job(job: &Job) -> Self {
        Self {
            created_at: job.created_at,
            id: job.id,
        }
    }
}

/// A compare-and-set either applies, or loses to whatever the row holds now.
#[derive(Debug, Clone, PartialEq)]
pub enum TransitionOutcome {
    /// The row moved; here it is as written.
    Applied(Box<Job>),
    /// The row was not at the expected status (someone else moved it first). `None` when the job is gone.
    Conflict { current: Option<JobStatus> },
}

/// A sandbox state change, guarded by the version the caller read.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxStateUpdate {
    pub expected_version: i64,
    pub state: SandboxState,
    /// Written when set; paused_at/resumed_at follow from the state.
    pub preview_url: Option<String>,
    /// When the provider stops the sandbox, written when set (a confirmed resume). Cleared by a move to a
    /// paused or dead state, whatever this holds.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Postgres, the system of record.
///
/// Errors: `Unavailable` for any database failure (transient ones, such as a connection closed under a
/// statement, a serialization failure or a deadlock, have already been retried within a bound); `NotFound` where a method addresses a single row that is
/// not there (methods returning `Option` use `None` instead); `AlreadyExists` on duplicate inserts.
/// What a build's sandbox cost ([`JobRepository::sandbox_seconds`]).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SandboxSeconds {
    /// In a state the provider bills (running, resuming, pausing, pause failed).
    pub billed: f64,
    /// With a visitor on the preview (seen by the preview gateway).
    pub visited: f64,
}

#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait JobRepository: Send + Sync {
    /// Inserts the job at submit time (status queued or scheduled) with enqueued_at = now.
    async fn insert_job(&self, job: &NewJob) -> Result<Job, RepoError>;

    /// Inserts the job as `quota` admits it (`job.status` and `status_message` are the admission's), in one
    /// transaction serialised per founder: the founder's jobs counted against `quota.day` and scheduled are
    /// read, and a queued job is counted against `quota.day` in its own row. An insert that fails counts
    /// nothing; a refusal inserts nothing. `NotFound` when the project is not the founder's.
    async fn insert_admitted_job(
        &self,
        job: &NewJob,
        quota: DailyQuota,
    ) -> Result<Admitted, RepoError>;

    /// How many of `user`'s jobs count against `day` in the daily quota.
    async fn jobs_counted_on(&self, user: &UserId, day: NaiveDate) -> Result<u32, RepoError>;

    async fn get_job(&self, id: JobId) -> Result<Option<Job>, RepoError>;

    /// The job only if `user` owns it: another user's job and a missing job look the same.
    async fn get_job_for_user(&self, id: JobId, user: &UserId) -> Result<Option<Job>, RepoError>;

    /// `UPDATE … WHERE id = $1 AND status = $from` (`AND attempts = $attempt` when the update carries one),
    /// with the update's fields, started_at when leaving the queue, completed_at and duration_seconds on a
    /// terminal status. A write refused by either guard is a `Conflict`. `IllegalTransition` when the table
    /// forbids the move.
    async fn transition(
        &self,
        id: JobId,
        from: JobStatus,
        to: JobStatus,
        update: TransitionUpdate,
    ) -> Result<TransitionOutcome, RepoError>;

    /// Records the sandbox id (state `running`) whatever the job's status, so that no sandbox is leaked. The
    /// pipeline records a new sandbox with its move to code (one write); it calls this when that move cannot
    /// be made (the job moved while the sandbox was being created), and the sandbox must still be known.
    /// Fenced by the build's `attempt`: `Ok(None)` when the job is gone or has moved on to another attempt
    /// (then the sandbox is the caller's alone to kill).
    async fn record_sandbox(
        &self,
        id: JobId,
        sandbox: &SandboxId,
        attempt: i32,
    ) -> Result<Option<Job>, RepoError>;

    /// Sets sandbox_state and sandbox_paused in one statement, guarded by `sandbox_state_version`.
    /// `Ok(None)`: the version had moved on (a lost race) or the job is gone.
    async fn set_sandbox_state(
        &self,
        id: JobId,
        update: SandboxStateUpdate,
    ) -> Result<Option<Job>, RepoError>;

    /// Notes preview activity (for the idle re-pause).
    async fn touch_activity(&self, id: JobId, at: DateTime<Utc>) -> Result<(), RepoError>;

    /// Notes a visitor on the job's preview at `at` (activity, as [`Self::touch_activity`]) and adds
    /// `seconds` to the seconds with a visitor.
    async fn record_visit(
        &self,
        id: JobId,
        at: DateTime<Utc>,
        seconds: f64,
    ) -> Result<(), RepoError>;

    /// What the job's sandbox cost so far: seconds billed (the current spell included) and seconds with a
    /// visitor. `None` for an unknown job.
    async fn sandbox_seconds(&self, id: JobId) -> Result<Option<SandboxSeconds>, RepoError>;

    /// Puts a building job whose worker vanished back to queued (CAS on `from`, and on `attempt`: the
    /// attempt being abandoned), clearing its sandbox.
    async fn requeue_job(
        &self,
        id: JobId,
        from: JobStatus,
        attempt: i32,
    ) -> Result<TransitionOutcome, RepoError>;

    /// A user's jobs, newest first.
    async fn list_jobs_for_user(&self, user: &UserId, limit: i64) -> Result<Vec<Job>, RepoError>;

    /// A project's jobs, newest first.
    async fn list_jobs_for_project(&self, project: ProjectId) -> Result<Vec<Job>, RepoError>;

    /// One page of the jobs with a given status (queued ones to rebuild the queue, scheduled ones to
    /// promote, …), oldest first: at most `limit`, after `after` (the last job of the previous page;
    /// from the first when `None`). Read by an index in this order, so paging through every one costs
    /// what reading them once does.
    async fn list_jobs_by_status(
        &self,
        status: JobStatus,
        after: Option<PageAfter>,
        limit: i64,
    ) -> Result<Vec<Job>, RepoError>;

    /// One page (as [`JobRepository::list_jobs_by_status`] pages) of the jobs whose sandbox needs
    /// attention: READY with a live sandbox that is not paused (pausing, running, pause_failed, resuming),
    /// and failed jobs whose sandbox is still live.
    async fn jobs_needing_attention(
        &self,
        after: Option<PageAfter>,
        limit: i64,
    ) -> Result<Vec<Job>, RepoError>;

    /// The job that owns this sandbox, if any.
    async fn find_job_by_sandbox(&self, sandbox: &SandboxId) -> Result<Option<Job>, RepoError>;

    async fn create_project(&self, project: &NewProject) -> Result<Project, RepoError>;

    /// The project only if `user` owns it.
    async fn get_project_for_user(
        &self,
        id: ProjectId,
        user: &UserId,
    ) -> Result<Option<Project>, RepoError>;

    /// A user's projects that are not deleted, newest first, with their latest READY job and its sandbox
    /// state.
    async fn list_projects(&self, user: &UserId) -> Result<Vec<ProjectSummary>, RepoError>;

    /// One project as [`JobRepository::list_projects`] describes it, whatever its status, if `user` owns it.
    async fn get_project_summary(
        &self,
        id: ProjectId,
        user: &UserId,
    ) -> Result<Option<ProjectSummary>, RepoError>;

    /// Soft-deletes a project `user` owns (status `deleted`; repeating it is harmless). `None` when the
    /// user owns no such project.
    async fn delete_project(
        &self,
        id: ProjectId,
        user: &UserId,
    ) -> Result<Option<Project>, RepoError>;
}
