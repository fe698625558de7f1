//! Cancelling a build: a compare-and-set to `failed` from whatever non-terminal status the job is in.
//!
//! A queued job also leaves the queue. A building job's worker notices the `failed` status at its next
//! heartbeat and stops; a sandbox already recorded on the job is killed here as well, so a cancel really
//! stops the billing even if the worker is gone.

use chrono::Utc;

use crate::ports::{
    JobQueue, JobRepository, LiveJobStore, RepoError, SandboxError, SandboxRuntime,
    SandboxStateUpdate, TransitionOutcome, TransitionUpdate,
};
use crate::{Job, JobEvent, JobId, JobStatus, SandboxState, UserId};

/// The status message (and error message) of a cancelled job.
pub const CANCELLED_MESSAGE: &str = "Cancelled by user";

/// How many times a lost race is retried: the status can advance at most a few stages meanwhile.
const MAX_ATTEMPTS: usize = 8;

/// What cancelling needs.
#[derive(Clone, Copy)]
pub struct CancelDeps<'a> {
    pub repo: &'a dyn JobRepository,
    pub live: &'a dyn LiveJobStore,
    pub queue: &'a dyn JobQueue,
    pub sandbox: &'a dyn SandboxRuntime,
}

/// A cancelled job, as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Cancelled {
    pub job: Job,
    /// The status it was cancelled from.
    pub from: JobStatus,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CancelError {
    /// The job does not exist or belongs to someone else.
    #[error("job not found")]
    NotFound,
    /// Ready or failed: there is nothing to cancel.
    #[error("job is already in terminal state ({0})")]
    Terminal(JobStatus),
    /// The status kept moving under us; the caller may try again.
    #[error("job status kept changing; cancel not applied")]
    Contended,
    #[error("job repository failed")]
    Repo(#[source] RepoError),
}

/// Cancels `job_id` on behalf of `user`.
#[tracing::instrument(
    skip_all,
    fields(job_id = %job_id, user_id = %user, sandbox_id = tracing::field::Empty),
    err
)]
pub async fn cancel_job(
    deps: CancelDeps<'_>,
    user: &UserId,
    job_id: JobId,
) -> Result<Cancelled, CancelError> {
    let mut job = deps
        .repo
        .get_job_for_user(job_id, user)
        .await
        .map_err(CancelError::Repo)?
        .ok_or(CancelError::NotFound)?;

    for _ in 0..MAX_ATTEMPTS {
        let from = job.status;
        if from.is_terminal() {
            return Err(CancelError::Terminal(from));
        }
        if from == JobStatus::Queued {
            // The status CAS below is what counts: a worker that still leases the job finds it failed.
            if let Err(error) = deps.queue.remove(job_id).await {
                tracing::warn!(error = %error, "could not remove the cancelled job from the queue");
            }
        }
        let update = TransitionUpdate {
            message: Some(CANCELLED_MESSAGE.to_owned()),
            error_message: Some(CANCELLED_MESSAGE.to_owned()),
            ..TransitionUpdate::default()
        };
        match deps
            .repo
            .transition(job_id, from, JobStatus::Failed, update)
            .await
            .map_err(CancelError::Repo)?
        {
            TransitionOutcome::Applied(failed) => {
                let failed = *failed;
                publish(deps, &failed).await;
                let failed = kill_sandbox(deps, failed).await;
                return Ok(Cancelled { job: failed, from });
            }
            TransitionOutcome::Conflict { current: None } => return Err(CancelError::NotFound),
            TransitionOutcome::Conflict { current: Some(now) } => {
                tracing::debug!(expected = %from, current = %now, "status moved; re-reading");
                job = deps
                    .repo
                    .get_job_for_user(job_id, user)
                    .await
                    .map_err(CancelError::Repo)?
                    .ok_or(CancelError::NotFound)?;
            }
        }
    }
    Err(CancelError::Contended)
}

async fn publish(deps: CancelDeps<'_>, job: &Job) {
    let event = JobEvent {
        job_id: job.id,
        status: job.status,
        message: CANCELLED_MESSAGE.to_owned(),
        preview_url: None,
        timestamp: Utc::now(),
    };
    if let Err(error) = deps.live.save_and_publish(job, &event).await {
        tracing::warn!(error = %error, "live job hash not updated after cancel");
    }
}

/// Kills the job's sandbox when one is recorded and live, and records `killed`. Failures are logged: the
/// reconciler kills sandboxes of failed jobs that are still live.
pub(crate) async fn kill_sandbox(deps: CancelDeps<'_>, job: Job) -> Job {
    let Some(sandbox_id) = job.sandbox_id.clone() else {
        return job;
    };
    if !job.sandbox_state.is_live() {
        return job;
    }
    tracing::Span::current().record("sandbox_id", tracing::field::display(&sandbox_id));
    match deps.sandbox.kill(&sandbox_id).await {
        Ok(()) | Err(SandboxError::NotFound(_)) => {}
        Err(error) => {
            tracing::warn!(sandbox_id = %sandbox_id, error = %error, "could not kill the cancelled job's sandbox");
            return job;
        }
    }
    let update = SandboxStateUpdate {
        expected_version: job.sandbox_state_version,
        state: SandboxState::Killed,
        preview_url: None,
        expires_at: None,
    };
    match deps.repo.set_sandbox_state(job.id, update).await {
        Ok(Some(killed)) => {
            if let Err(error) = deps.live.save(&killed).await {
                tracing::warn!(error = %error, "live job hash not updated after kill");
            }
            killed
        }
        Ok(None) => {
            tracing::info!(sandbox_id = %sandbox_id, "sandbox state moved meanwhile; left to the reconciler");
            job
        }
        Err(error) => {
            tracing::warn!(sandbox_id = %sandbox_id, error = %error, "could not record the killed sandbox");
            job
        }
    }
}

#[cfg(test)]
#[path = "cancel_tests.rs"]
mod tests;
