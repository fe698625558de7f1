//! Step 1: builds whose worker vanished are rebuilt, or failed after `max_build_attempts`.
//!
//! Two sources: leases the queue reclaimed because their deadline passed, and building jobs absent from
//! the queue altogether (their lease was lost with Redis) after `orphan_after` without a transition. Either
//! way the job's sandbox (if any) is killed first, so the old build can neither bill nor write.

use chrono::{DateTime, Utc};

use super::pauses::elapsed;
use super::{ReconcileError, Reconciler};
use crate::ports::{QueuedJob, SandboxError, TransitionOutcome, TransitionUpdate};
use crate::usecases::pipeline::REQUEUED_MESSAGE;
use crate::usecases::snapshot::{save_live, set_state};
use crate::{DebugId, Job, JobEvent, JobId, JobStatus, SandboxState};

/// What the lease step did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseReport {
    /// Leases the queue reclaimed.
    pub reclaimed: usize,
    /// Building jobs found without any lease.
    pub orphaned: usize,
    pub requeued: usize,
    pub failed: usize,
    pub sandboxes_killed: usize,
    /// Reclaimed jobs that needed nothing (finished, gone, or moved on meanwhile).
    pub untouched: usize,
    pub errors: usize,
}

impl Reconciler {
    /// Recovers builds whose lease expired (or was lost): requeued while attempts remain, else failed with
    /// "Build worker lost after N attempt(s)".
    #[tracing::instrument(skip_all, err)]
    pub async fn recover_expired_leases(
        &self,
        now: DateTime<Utc>,
    ) -> Result<LeaseReport, ReconcileError> {
        let d = &self.deps;
        let mut report = LeaseReport::default();
        let reclaimed = d.queue.reclaim_expired().await?;
        report.reclaimed = reclaimed.len();
        for queued in reclaimed {
            self.recover(queued.job_id, &mut report).await;
        }

        for status in JobStatus::ALL.into_iter().filter(|s| s.is_building()) {
            for job in d
                .repo
                .list_jobs_by_status(status, self.config.scan_limit)
                .await?
            {
                if elapsed(job.updated_at, now) < self.config.orphan_after
                    || d.queue.contains(job.id).await?
                {
                    continue;
                }
                report.orphaned += 1;
                tracing::warn!(job_id = %job.id, status = %job.status, "building job has no lease");
                self.recover(job.id, &mut report).await;
            }
        }
        Ok(report)
    }

    async fn recover(&self, job_id: JobId, report: &mut LeaseReport) {
        if let Err(error) = self.try_recover(job_id, report).await {
            report.errors += 1;
            tracing::warn!(%job_id, error = %error, "could not recover the job");
        }
    }

    async fn try_recover(
        &self,
        job_id: JobId,
        report: &mut LeaseReport,
    ) -> Result<(), ReconcileError> {
        let d = &self.deps;
        let Some(job) = d.repo.get_job(job_id).await? else {
            report.untouched += 1;
            return Ok(());
        };
        // A scheduled job is promoted by its own step; a finished one only lost its ack.
        if !(job.status.is_building() || job.status == JobStatus::Queued) {
            report.untouched += 1;
            return Ok(());
        }
        let killed = self.kill_build_sandbox(&job, report).await?;
        if job.attempts < self.config.max_build_attempts {
            self.requeue(job, report).await
        } else {
            self.fail(job, killed, report).await
        }
    }

    /// Kills the sandbox of an abandoned build; `true` when the job had one and it is gone now.
    async fn kill_build_sandbox(
        &self,
        job: &Job,
        report: &mut LeaseReport,
    ) -> Result<bool, ReconcileError> {
        let Some(sandbox_id) = job.sandbox_id.as_ref() else {
            return Ok(false);
        };
        if !job.sandbox_state.is_live() {
            return Ok(true);
        }
        match self.deps.runtime.kill(sandbox_id).await {
            Ok(()) => {
                report.sandboxes_killed += 1;
                tracing::info!(job_id = %job.id, %sandbox_id, "abandoned build's sandbox killed");
                Ok(true)
            }
            Err(SandboxError::NotFound(_)) => Ok(true),
            Err(error) => Err(error.into()),
        }
    }

    async fn requeue(&self, job: Job, report: &mut LeaseReport) -> Result<(), ReconcileError> {
        let d = &self.deps;
        let job = if job.status == JobStatus::Queued {
            job
        } else {
            match d.repo.requeue_job(job.id, job.status).await? {
                TransitionOutcome::Applied(job) => *job,
                TransitionOutcome::Conflict { current } => {
                    tracing::info!(job_id = %job.id, ?current, "job moved on; not requeued");
                    report.untouched += 1;
                    return Ok(());
                }
            }
        };
        let event = JobEvent {
            job_id: job.id,
            status: job.status,
            message: REQUEUED_MESSAGE.to_owned(),
            preview_url: None,
            timestamp: Utc::now(),
        };
        if let Err(error) = d.live.save_and_publish(&job, &event).await {
            tracing::warn!(job_id = %job.id, error = %error, "could not mirror the requeue");
        }
        // Postgres says queued now: if this enqueue fails, rebuild_redis enqueues it later.
        d.queue.enqueue(&queued_job(&job)).await?;
        report.requeued += 1;
        tracing::info!(job_id = %job.id, attempts = job.attempts, "build requeued after its worker was lost");
        Ok(())
    }

    async fn fail(
        &self,
        job: Job,
        sandbox_killed: bool,
        report: &mut LeaseReport,
    ) -> Result<(), ReconcileError> {
        let d = &self.deps;
        let error_message = worker_lost_message(job.attempts);
        let update = TransitionUpdate {
            message: Some(JobStatus::Failed.label().to_owned()),
            error_message: Some(error_message.clone()),
            debug_id: Some(DebugId::new()),
            ..TransitionUpdate::default()
        };
        let mut failed = match d
            .repo
            .transition(job.id, job.status, JobStatus::Failed, update)
            .await?
        {
            TransitionOutcome::Applied(job) => *job,
            TransitionOutcome::Conflict { current } => {
                tracing::info!(job_id = %job.id, ?current, "job moved on; not failed");
                report.untouched += 1;
                return Ok(());
            }
        };
        if sandbox_killed && failed.sandbox_state.is_live() {
            if let Some(written) = set_state(d.repo.as_ref(), &failed, SandboxState::Killed).await?
            {
                failed = written;
            }
        }
        let event = JobEvent {
            job_id: failed.id,
            status: JobStatus::Failed,
            message: error_message,
            preview_url: None,
            timestamp: Utc::now(),
        };
        if let Err(error) = d.live.save_and_publish(&failed, &event).await {
            tracing::warn!(job_id = %failed.id, error = %error, "could not publish the failure");
            save_live(d.live.as_ref(), &failed).await;
        }
        report.failed += 1;
        tracing::warn!(
            job_id = %failed.id,
            attempts = failed.attempts,
            debug_id = ?failed.debug_id,
            "build failed: its worker was lost too many times"
        );
        Ok(())
    }
}

/// What the queue needs of a job.
pub(super) fn queued_job(job: &Job) -> QueuedJob {
    QueuedJob {
        job_id: job.id,
        user_id: job.user_id.clone(),
        project_id: job.project_id,
        tier: job.tier,
    }
}

/// The error message of a build failed because its worker was lost `attempts` times.
pub(super) fn worker_lost_message(attempts: i32) -> String {
    let noun = if attempts == 1 { "attempt" } else { "attempts" };
    format!("Build worker lost after {attempts} {noun}")
}

#[cfg(test)]
#[path = "leases_tests.rs"]
mod tests;
