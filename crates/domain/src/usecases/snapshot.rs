//! Snapshot (`POST /api/generation/{job_id}/snapshot`): pause a READY job's running sandbox, and the pause
//! step the reconciler shares.
//!
//! A paused sandbox is never resumed in order to pause it (fault 20 of the Python implementation): a job
//! already paused answers `paused: true` without calling the provider. The pause itself is the pipeline's
//! [`pause_job_sandbox`]: compare-and-sets on `sandbox_state_version`, running → pausing → paused, and
//! back to running (with the reason logged) when the provider refuses; Postgres first, then Redis.
//!
//! This module also holds the small sandbox-state record helpers resume and the reconciler share.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::ports::{
    JobRepository, LiveJobStore, RepoError, SandboxError, SandboxRuntime, SandboxStateUpdate,
};
use crate::usecases::pipeline::{pause_job_sandbox, PauseDeps, PauseResult};
use crate::{Job, JobId, JobStatus, SandboxState, UserId};

/// What snapshot needs.
#[derive(Clone)]
pub struct SnapshotDeps {
    pub repo: Arc<dyn JobRepository>,
    pub live: Arc<dyn LiveJobStore>,
    pub runtime: Arc<dyn SandboxRuntime>,
}

/// How long snapshot waits for another operation on the sandbox (a resume, a pause) to settle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotConfig {
    pub settle_deadline: Duration,
    pub poll_interval: Duration,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        Self {
            settle_deadline: Duration::from_secs(30),
            poll_interval: Duration::from_millis(250),
        }
    }
}

/// What really happened: `paused` is true only when the provider confirmed the pause (or it was paused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotResult {
    pub paused: bool,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SnapshotError {
    /// The job does not exist or belongs to someone else (404).
    #[error("job not found")]
    NotFound,
    /// Only a READY job's sandbox can be snapshotted (422).
    #[error("job is not ready ({0})")]
    NotReady(JobStatus),
    /// The job has no sandbox (404).
    #[error("job has no sandbox")]
    NoSandbox,
    /// The provider no longer has the sandbox; its state is now expired (503, paused false).
    #[error("sandbox no longer exists")]
    Expired,
    /// The pause did not happen; the sandbox is still running (503, `paused: false`).
    #[error("pause failed: {0}")]
    PauseFailed(String),
    #[error("job repository failed")]
    Repo(#[source] RepoError),
}

/// Pauses READY jobs' sandboxes on request.
#[derive(Clone)]
pub struct SnapshotService {
    deps: SnapshotDeps,
    config: SnapshotConfig,
}

impl SnapshotService {
    pub fn new(deps: SnapshotDeps, config: SnapshotConfig) -> Self {
        Self { deps, config }
    }

    /// Pauses `job_id`'s sandbox for `user`. Idempotent: a paused sandbox answers `paused: true` at once,
    /// without any provider call.
    #[tracing::instrument(
        skip_all,
        fields(job_id = %job_id, user_id = %user, sandbox_id = tracing::field::Empty),
        err
    )]
    pub async fn snapshot(
        &self,
        user: &UserId,
        job_id: JobId,
    ) -> Result<SnapshotResult, SnapshotError> {
        let d = &self.deps;
        let mut job = d
            .repo
            .get_job_for_user(job_id, user)
            .await
            .map_err(SnapshotError::Repo)?
            .ok_or(SnapshotError::NotFound)?;
        if job.status != JobStatus::Ready {
            return Err(SnapshotError::NotReady(job.status));
        }
        let Some(sandbox_id) = job.sandbox_id.clone() else {
            return Err(SnapshotError::NoSandbox);
        };
        tracing::Span::current().record("sandbox_id", tracing::field::display(&sandbox_id));

        let until = Instant::now() + self.config.settle_deadline;
        loop {
            match job.sandbox_state {
                SandboxState::Paused => return Ok(SnapshotResult { paused: true }),
                SandboxState::Running | SandboxState::PauseFailed => {
                    let deps = PauseDeps {
                        repo: d.repo.as_ref(),
                        live: d.live.as_ref(),
                        runtime: d.runtime.as_ref(),
                    };
                    let started = Instant::now();
                    let result = pause_job_sandbox(deps, &job).await;
                    let pause_latency_ms = started.elapsed().as_millis() as u64;
                    tracing::info!(pause_latency_ms, outcome = ?result, "snapshot pause");
                    match result {
                        PauseResult::Paused(_) => return Ok(SnapshotResult { paused: true }),
                        PauseResult::Failed(SandboxError::NotFound(_)) => {
                            return Err(SnapshotError::Expired)
                        }
                        PauseResult::Failed(error) => {
                            return Err(SnapshotError::PauseFailed(error.to_string()))
                        }
                        PauseResult::Unrecorded(error) => return Err(SnapshotError::Repo(error)),
                        // Someone else changed the state first: look again.
                        PauseResult::Skipped => {}
                    }
                }
                SandboxState::Pausing | SandboxState::Resuming => {
                    tokio::time::sleep(self.config.poll_interval).await;
                }
                SandboxState::Expired | SandboxState::Killed => return Err(SnapshotError::Expired),
                SandboxState::None => return Err(SnapshotError::NoSandbox),
            }
            if Instant::now() >= until {
                return Err(SnapshotError::PauseFailed(
                    "another operation on the sandbox did not finish in time".into(),
                ));
            }
            job = d
                .repo
                .get_job(job_id)
                .await
                .map_err(SnapshotError::Repo)?
                .ok_or(SnapshotError::NotFound)?;
        }
    }
}

/// A compare-and-set of the sandbox state from the version in `job`; `None` when it lost.
pub(crate) async fn set_state(
    repo: &dyn JobRepository,
    job: &Job,
    state: SandboxState,
) -> Result<Option<Job>, RepoError> {
    set_state_with_preview(repo, job, state, None).await
}

pub(crate) async fn set_state_with_preview(
    repo: &dyn JobRepository,
    job: &Job,
    state: SandboxState,
    preview_url: Option<String>,
) -> Result<Option<Job>, RepoError> {
    repo.set_sandbox_state(
        job.id,
        SandboxStateUpdate {
            expected_version: job.sandbox_state_version,
            state,
            preview_url,
            expires_at: None,
        },
    )
    .await
}

/// When the provider stops a sandbox whose timeout was set to `timeout` at `set_at` (taken just before the
/// provider call, so that the figure never overstates). A timeout too large to add gives `set_at`.
pub(crate) fn expires_after(set_at: DateTime<Utc>, timeout: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(timeout)
        .ok()
        .and_then(|t| set_at.checked_add_signed(t))
        .unwrap_or(set_at)
}

/// Mirrors the row to Redis; a failure is logged, since Redis is rebuilt from Postgres.
pub(crate) async fn save_live(live: &dyn LiveJobStore, job: &Job) {
    if let Err(error) = live.save(job).await {
        tracing::warn!(job_id = %job.id, error = %error, "could not mirror the job to the live store");
    }
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
