//! How a build that stopped short of READY ends: a failure is recorded once, a cancelled or interrupted
//! build gives its job back, and in every case the sandbox it created is killed.

use super::context::{Build, Stop};
use super::failure::{failed_status_message, ErrorChain, PipelineError};
use super::BuildOutcome;
use crate::ports::{SandboxError, SandboxStateUpdate, TransitionOutcome, TransitionUpdate};
use crate::{DebugId, JobStatus, SandboxState};

/// The status message of a job given back to the queue by a worker that stopped.
pub const REQUEUED_MESSAGE: &str = "Requeued: the worker stopped before the build finished";

impl Build<'_> {
    pub(super) async fn finish(mut self, stop: Stop) -> BuildOutcome {
        match stop {
            Stop::Failed(error) => self.fail(error).await,
            // An infrastructure failure is not the build's: give the job back (another attempt, or the
            // reconciler once the lease runs out, builds it), never fail it.
            Stop::Repo(error) => {
                tracing::warn!(error = %error, "the job repository failed; giving the job back");
                self.interrupted().await
            }
            Stop::Conflict { current } => {
                self.kill_sandbox(true).await;
                lost(current)
            }
            Stop::Cancelled => self.interrupted().await,
        }
    }

    /// One transition to failed with the friendly message and a fresh debug id, then the kill.
    async fn fail(&mut self, error: PipelineError) -> BuildOutcome {
        let debug_id = DebugId::new();
        let friendly = error.friendly_message();
        tracing::error!(debug_id = %debug_id, error = %ErrorChain(&error), "build failed");
        let message = failed_status_message(debug_id, &friendly);
        self.log.system(
            self.job.status.as_str(),
            &format!("--- Build failed: {friendly} ---"),
        );
        let update = TransitionUpdate {
            message: Some(message.clone()),
            error_message: Some(friendly),
            debug_id: Some(debug_id),
            attempt: Some(self.attempt()),
            ..TransitionUpdate::default()
        };
        let outcome = match self
            .deps
            .repo
            .transition(self.job.id, self.job.status, JobStatus::Failed, update)
            .await
        {
            Ok(TransitionOutcome::Applied(job)) => {
                self.job = *job;
                self.publish(message).await;
                BuildOutcome::Failed { debug_id }
            }
            Ok(TransitionOutcome::Conflict { current }) => lost(current),
            Err(error) => {
                // The row stays at its building status; the reconciler requeues or fails it when the
                // lease runs out.
                tracing::error!(debug_id = %debug_id, error = %error, "could not record the failed build");
                BuildOutcome::Interrupted { requeued: false }
            }
        };
        self.kill_sandbox(true).await;
        outcome
    }

    /// Our token fired while the job was still ours (or Postgres failed under a stage): kill the sandbox and
    /// put the job back in the queue, unless someone else moved it meanwhile (then a cancel, most likely,
    /// and that is what we report).
    async fn interrupted(&mut self) -> BuildOutcome {
        let from = self.job.status;
        if !from.is_building() {
            // It never left the queue: there is nothing to undo.
            return BuildOutcome::Interrupted { requeued: true };
        }
        // requeue_job clears the sandbox fields, so there is no state to record for the kill.
        self.kill_sandbox(false).await;
        match self
            .deps
            .repo
            .requeue_job(self.job.id, from, self.attempt())
            .await
        {
            Ok(TransitionOutcome::Applied(job)) => {
                self.job = *job;
                tracing::info!(from = %from, "build interrupted; job requeued");
                self.publish(REQUEUED_MESSAGE.to_owned()).await;
                BuildOutcome::Interrupted { requeued: true }
            }
            Ok(TransitionOutcome::Conflict { current }) => lost(current),
            Err(error) => {
                tracing::error!(error = %error, "could not requeue the interrupted build");
                BuildOutcome::Interrupted { requeued: false }
            }
        }
    }

    /// Kills our sandbox (gone already is fine) and, when asked, records `killed` while the row still names
    /// it. A kill that fails is logged: the reconciler kills live sandboxes of jobs that are not building.
    async fn kill_sandbox(&mut self, record: bool) {
        let Some(sandbox) = self.sandbox.take() else {
            return;
        };
        match self.deps.runtime.kill(&sandbox).await {
            Ok(()) | Err(SandboxError::NotFound(_)) => {
                tracing::info!("sandbox killed");
            }
            Err(error) => {
                tracing::warn!(error = %error, "could not kill the sandbox; left to the reconciler");
                return;
            }
        }
        let ours = self.job.sandbox_id.as_ref() == Some(&sandbox);
        if !record || !ours || !self.job.sandbox_state.is_live() {
            return;
        }
        let update = SandboxStateUpdate {
            expected_version: self.job.sandbox_state_version,
            state: SandboxState::Killed,
            preview_url: None,
            expires_at: None,
        };
        match self.deps.repo.set_sandbox_state(self.job.id, update).await {
            Ok(Some(job)) => {
                self.job = job;
                self.save_live().await;
            }
            // Someone else (a cancel) recorded it first.
            Ok(None) => tracing::debug!("sandbox state moved meanwhile"),
            Err(error) => tracing::warn!(error = %error, "could not record the killed sandbox"),
        }
    }
}

/// A compare-and-set lost to `current`: failed means someone cancelled (or failed) the job.
fn lost(current: Option<JobStatus>) -> BuildOutcome {
    match current {
        Some(JobStatus::Failed) => BuildOutcome::Cancelled,
        current => BuildOutcome::Lost { current },
    }
}
