//! Storage rows and their mapping into domain types: every stored string is parsed once, here.

use chrono::{DateTime, Utc};
use domain::ports::{PageAfter, RepoError};
use domain::{
    DebugId, Job, JobId, JobStatus, Project, ProjectId, ProjectStatus, SandboxId, SandboxState,
    Tier, UserId,
};
use uuid::Uuid;

/// The columns a [`JobRow`] reads, in one place (a macro so that `concat!` builds static query strings,
/// which sqlx prepares once and caches per connection).
macro_rules! job_columns {
    () => {
        "id, project_id, user_id, tier, goal, status, status_message, error_message, debug_id, attempts, \
         sandbox_id, preview_url, workspace_path, build_version, sandbox_state, sandbox_state_version, \
         paused_at, resumed_at, sandbox_expires_at, last_activity_at, enqueued_at, started_at, completed_at, created_at, \
         updated_at, duration_seconds"
    };
}
pub(crate) use job_columns;

/// One `jobs` row as stored.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct JobRow {
    id: Uuid,
    project_id: Uuid,
    user_id: String,
    tier: String,
    goal: String,
    status: String,
    status_message: Option<String>,
    error_message: Option<String>,
    debug_id: Option<String>,
    attempts: i32,
    sandbox_id: Option<String>,
    preview_url: Option<String>,
    workspace_path: Option<String>,
    build_version: Option<String>,
    sandbox_state: String,
    sandbox_state_version: i64,
    paused_at: Option<DateTime<Utc>>,
    resumed_at: Option<DateTime<Utc>>,
    sandbox_expires_at: Option<DateTime<Utc>>,
    last_activity_at: Option<DateTime<Utc>>,
    enqueued_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    duration_seconds: Option<i32>,
}

fn corrupt(column: &str, e: impl std::fmt::Display) -> RepoError {
    RepoError::Corrupt(format!("{column}: {e}"))
}

pub(crate) fn parse_status(s: &str) -> Result<JobStatus, RepoError> {
    JobStatus::try_from(s).map_err(|e| corrupt("status", e))
}

impl TryFrom<JobRow> for Job {
    type Error = RepoError;

    fn try_from(r: JobRow) -> Result<Self, Self::Error> {
        Ok(Job {
            id: JobId::from_uuid(r.id),
            project_id: ProjectId::from_uuid(r.project_id),
            user_id: UserId::try_from(r.user_id).map_err(|e| corrupt("user_id", e))?,
            tier: Tier::try_from(r.tier.as_str()).map_err(|e| corrupt("tier", e))?,
            goal: r.goal,
            status: parse_status(&r.status)?,
            status_message: r.status_message,
            error_message: r.error_message,
            debug_id: r
                .debug_id
                .map(|d| DebugId::parse(&d))
                .transpose()
                .map_err(|e| corrupt("debug_id", e))?,
            attempts: r.attempts,
            sandbox_id: r
                .sandbox_id
                .map(SandboxId::try_from)
                .transpose()
                .map_err(|e| corrupt("sandbox_id", e))?,
            preview_url: r.preview_url,
            workspace_path: r.workspace_path,
            build_version: r.build_version,
            sandbox_state: SandboxState::try_from(r.sandbox_state.as_str())
                .map_err(|e| corrupt("sandbox_state", e))?,
            sandbox_state_version: r.sandbox_state_version,
            paused_at: r.paused_at,
            resumed_at: r.resumed_at,
            sandbox_expires_at: r.sandbox_expires_at,
            last_activity_at: r.last_activity_at,
            enqueued_at: r.enqueued_at,
            started_at: r.started_at,
            completed_at: r.completed_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
            duration_seconds: r.duration_seconds,
        })
    }
}

/// The (created_at, id) a page starts after: before every row (all created since 1970) when there is no
/// previous page.
pub(crate) fn page_after(after: Option<PageAfter>) -> (DateTime<Utc>, Uuid) {
    match after {
        Some(a) => (a.created_at, a.id.as_uuid()),
        None => (DateTime::<Utc>::UNIX_EPOCH, Uuid::nil()),
    }
}

/// Maps a fetched optional row.
pub(crate) fn job_opt(row: Option<JobRow>) -> Result<Option<Job>, RepoError> {
    row.map(Job::try_from).transpose()
}

/// Maps fetched rows, failing on the first that does not parse.
pub(crate) fn jobs(rows: Vec<JobRow>) -> Result<Vec<Job>, RepoError> {
    rows.into_iter().map(Job::try_from).collect()
}

/// One `projects` row as stored.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ProjectRow {
    pub(crate) id: Uuid,
    pub(crate) user_id: String,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) github_repo: Option<String>,
    pub(crate) status: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) last_build_version: i32,
}

impl TryFrom<ProjectRow> for Project {
    type Error = RepoError;

    fn try_from(r: ProjectRow) -> Result<Self, Self::Error> {
        Ok(Project {
            id: ProjectId::from_uuid(r.id),
            user_id: UserId::try_from(r.user_id).map_err(|e| corrupt("user_id", e))?,
            name: r.name,
            description: r.description,
            github_repo: r.github_repo,
            status: ProjectStatus::parse(&r.status)
                .ok_or_else(|| corrupt("projects.status", &r.status))?,
            created_at: r.created_at,
            last_build_version: u32::try_from(r.last_build_version)
                .map_err(|e| corrupt("last_build_version", e))?,
        })
    }
}
