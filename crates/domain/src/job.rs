//! The generation job record and the project it belongs to.

use chrono::{DateTime, Utc};

use crate::{DebugId, JobGoal, JobId, JobStatus, ProjectId, SandboxId, SandboxState, Tier, UserId};

/// A project's build number, spelled `build_v0_N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct BuildVersion(pub u32);

impl BuildVersion {
    /// What every label starts with; the number follows.
    pub const PREFIX: &'static str = "build_v0_";

    pub fn label(self) -> String {
        format!("{}{}", Self::PREFIX, self.0)
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.strip_prefix(Self::PREFIX)?.parse().ok().map(BuildVersion)
    }
}

/// One generation job as Postgres records it (and Redis mirrors it).
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub project_id: ProjectId,
    pub user_id: UserId,
    pub tier: Tier,
    pub goal: String,
    pub status: JobStatus,
    pub status_message: Option<String>,
    pub error_message: Option<String>,
    pub debug_id: Option<DebugId>,
    pub attempts: i32,
    pub sandbox_id: Option<SandboxId>,
    pub preview_url: Option<String>,
    pub workspace_path: Option<String>,
    pub build_version: Option<String>,
    pub sandbox_state: SandboxState,
    /// Bumped on every sandbox state write; the guard of its compare-and-set.
    pub sandbox_state_version: i64,
    pub paused_at: Option<DateTime<Utc>>,
    pub resumed_at: Option<DateTime<Utc>>,
    /// When the provider stops the running sandbox: the time just before Slipway last set its timeout
    /// (create, or a confirmed resume) plus that timeout. None while paused and once killed.
    pub sandbox_expires_at: Option<DateTime<Utc>>,
    pub last_activity_at: Option<DateTime<Utc>>,
    pub enqueued_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub duration_seconds: Option<i32>,
}

impl Job {
    /// `sandbox_paused` is derived from the state, so the two can never disagree.
    pub fn sandbox_paused(&self) -> bool {
        self.sandbox_state.is_paused()
    }

    pub fn stage_label(&self) -> &'static str {
        self.status.label()
    }

    /// Orders the records of one job by age: `sandbox_state_version` first (it never decreases from one
    /// write to the next), then `updated_at`. Copies of the row (the live hash) carry it, so a copy older
    /// than the row is known stale and a newer one is never overwritten by an older.
    pub fn revision(&self) -> (i64, DateTime<Utc>) {
        (self.sandbox_state_version, self.updated_at)
    }
}

/// What the API knows when a job is submitted.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub id: JobId,
    pub project_id: ProjectId,
    pub user_id: UserId,
    pub tier: Tier,
    pub goal: JobGoal,
    /// `Queued`, or `Scheduled` when the daily limit is reached.
    pub status: JobStatus,
    pub status_message: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewProject {
    pub id: ProjectId,
    pub user_id: UserId,
    pub name: String,
    /// What the founder wrote about it; empty when nothing was given.
    pub description: String,
    pub github_repo: Option<String>,
}

impl NewProject {
    /// A project with only a name.
    pub fn named(user_id: UserId, name: impl Into<String>) -> Self {
        Self {
            id: ProjectId::new(),
            user_id,
            name: name.into(),
            description: String::new(),
            github_repo: None,
        }
    }
}

/// A project's lifecycle. `Parked` exists in the front end's vocabulary (a project set aside); Slipway never
/// parks one itself. `Deleted` is the soft delete: hidden from the list, no new builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectStatus {
    Active,
    Parked,
    Deleted,
}

impl ProjectStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Parked => "parked",
            Self::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "parked" => Some(Self::Parked),
            "deleted" => Some(Self::Deleted),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    pub id: ProjectId,
    pub user_id: UserId,
    pub name: String,
    pub description: String,
    pub github_repo: Option<String>,
    pub status: ProjectStatus,
    pub created_at: DateTime<Utc>,
    /// The N of the project's latest `build_v0_N`; 0 before its first READY build.
    pub last_build_version: u32,
}

impl Project {
    /// The version the project's next READY build would get now: a prediction for the start response, as a
    /// concurrent READY can take it first (the real one is assigned at READY, under the project's lock).
    pub fn next_build_version(&self) -> BuildVersion {
        BuildVersion(self.last_build_version.saturating_add(1))
    }
}

/// A project as the dashboard lists it: with its latest READY job.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectSummary {
    pub project: Project,
    pub latest_job_id: Option<JobId>,
    /// The sandbox state of that job.
    pub latest_sandbox_state: Option<SandboxState>,
}

impl ProjectSummary {
    /// What the dashboard is told: whether the latest READY job's preview must be resumed first
    /// ([`SandboxState::leads_to_resume`]).
    pub fn sandbox_paused(&self) -> bool {
        self.latest_sandbox_state
            .is_some_and(SandboxState::leads_to_resume)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_version_spelling() {
        assert_eq!(BuildVersion(3).label(), "build_v0_3");
        assert_eq!(BuildVersion::parse("build_v0_12"), Some(BuildVersion(12)));
        assert_eq!(BuildVersion::parse("v12"), None);
    }
}
