//! Pause after READY: the sandbox stops billing the moment the build is done. Only a pause the provider
//! confirmed (or answered "already paused") is recorded as paused, Postgres first, then Redis. A failed
//! pause never touches the job status: the job stays READY with sandbox_paused=false for the reconciler.

use super::context::Build;
use super::BuildOutcome;
use crate::ports::{
    JobRepository, LiveJobStore, RepoError, SandboxError, SandboxRuntime, SandboxStateUpdate,
};
use crate::{Job, PausePolicy, SandboxId, SandboxState};

/// What pausing needs (the reconciler's retries use it too).
#[derive(Clone, Copy)]
pub struct PauseDeps<'a> {
    pub repo: &'a dyn JobRepository,
    pub live: &'a dyn LiveJobStore,
    pub runtime: &'a dyn SandboxRuntime,
}

/// What a pause came to.
#[derive(Debug, Clone, PartialEq)]
pub enum PauseResult {
    /// The provider confirmed; both stores say paused. Here is the row as written.
    Paused(Box<Job>),
    /// The provider failed; the state went back to running (expired when the provider no longer has the
    /// sandbox) and sandbox_paused stays false.
    Failed(SandboxError),
    /// Postgres failed, before the pause (nothing was paused) or after it (the row still says pausing).
    Unrecorded(RepoError),
    /// Nothing done: the job has no sandbox, or its sandbox state moved under us (someone else is
    /// pausing or resuming it).
    Skipped,
}

/// Pauses the sandbox of `job` (as last read: its sandbox_state_version guards every write):
/// running → pausing, the provider's pause, then pausing → paused.
#[tracing::instrument(
    skip_all,
    fields(job_id = %job.id, sandbox_id = tracing::field::Empty)
)]
pub async fn pause_job_sandbox(deps: PauseDeps<'_>, job: &Job) -> PauseResult {
    let Some(sandbox) = job.sandbox_id.clone() else {
        return PauseResult::Skipped;
    };
    tracing::Span::current().record("sandbox_id", tracing::field::display(&sandbox));
    let pausing = match set_state(deps, job, SandboxState::Pausing).await {
        Ok(Some(pausing)) => pausing,
        Ok(None) => {
            tracing::info!("sandbox state moved before the pause; skipped");
            return PauseResult::Skipped;
        }
        Err(error) => {
            tracing::warn!(pause_failed = true, error = %error, "could not record pausing; not paused");
            return PauseResult::Unrecorded(error);
        }
    };
    pause_recorded_pausing(deps, &pausing, &sandbox).await
}

/// The rest of a pause once `pausing` is recorded (by [`pause_job_sandbox`], or by the READY write when
/// the policy pauses at once): the provider's pause, then pausing → paused, or back on failure.
#[tracing::instrument(skip_all, fields(job_id = %pausing.id, sandbox_id = %sandbox))]
async fn pause_recorded_pausing(
    deps: PauseDeps<'_>,
    pausing: &Job,
    sandbox: &SandboxId,
) -> PauseResult {
    match deps.runtime.pause(sandbox).await {
        Ok(outcome) => match set_state(deps, pausing, SandboxState::Paused).await {
            Ok(Some(paused)) => {
                tracing::info!(outcome = ?outcome, "sandbox paused");
                save_live(deps, &paused).await;
                PauseResult::Paused(Box::new(paused))
            }
            Ok(None) => {
                tracing::warn!("sandbox state moved during the pause; not recorded as paused");
                PauseResult::Skipped
            }
            Err(error) => {
                tracing::warn!(pause_failed = true, error = %error, "sandbox paused but not recorded");
                PauseResult::Unrecorded(error)
            }
        },
        Err(error) => {
            tracing::warn!(
                pause_failed = true,
                error = %error,
                "pause failed; the sandbox is left for the reconciler"
            );
            let back = match error {
                SandboxError::NotFound(_) => SandboxState::Expired,
                _ => SandboxState::Running,
            };
            match set_state(deps, pausing, back).await {
                Ok(Some(job)) => save_live(deps, &job).await,
                Ok(None) => tracing::debug!("sandbox state moved meanwhile"),
                Err(error) => {
                    tracing::warn!(error = %error, "could not record the failed pause")
                }
            }
            PauseResult::Failed(error)
        }
    }
}

async fn set_state(
    deps: PauseDeps<'_>,
    job: &Job,
    state: SandboxState,
) -> Result<Option<Job>, RepoError> {
    let update = SandboxStateUpdate {
        expected_version: job.sandbox_state_version,
        state,
        preview_url: None,
        expires_at: None,
    };
    deps.repo.set_sandbox_state(job.id, update).await
}

async fn save_live(deps: PauseDeps<'_>, job: &Job) {
    if let Err(error) = deps.live.save(job).await {
        tracing::warn!(error = %error, "live job hash not updated after a sandbox change");
    }
}

impl Build<'_> {
    /// The build is READY: apply the pause policy.
    pub(super) async fn after_ready(self) -> BuildOutcome {
        match self.config.pause_policy {
            PausePolicy::Immediate => {
                let deps = PauseDeps {
                    repo: self.deps.repo.as_ref(),
                    live: self.deps.live.as_ref(),
                    runtime: self.deps.runtime.as_ref(),
                };
                let paused = match (&self.job.sandbox_id, self.job.sandbox_state) {
                    // READY was written with the sandbox already `pausing`.
                    (Some(sandbox), SandboxState::Pausing) => {
                        pause_recorded_pausing(deps, &self.job, sandbox).await
                    }
                    _ => pause_job_sandbox(deps, &self.job).await,
                };
                match paused {
                    PauseResult::Paused(_) => BuildOutcome::Ready {
                        paused: true,
                        pause_failed: false,
                    },
                    PauseResult::Failed(_) | PauseResult::Unrecorded(_) => BuildOutcome::Ready {
                        paused: false,
                        pause_failed: true,
                    },
                    PauseResult::Skipped => BuildOutcome::Ready {
                        paused: false,
                        pause_failed: false,
                    },
                }
            }
            // Idle: the reconciler pauses it after the idle period. Never: the provider timeout applies.
            PausePolicy::Idle(_) | PausePolicy::Never => BuildOutcome::Ready {
                paused: false,
                pause_failed: false,
            },
        }
    }
}
