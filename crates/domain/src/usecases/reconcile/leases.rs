//! Step 1: builds whose worker vanished are rebuilt, or failed after `max_build_attempts`.
//!
//! Two sources: leases past their deadline, and building jobs absent from the queue altogether (their
//! lease was lost with Redis) after `orphan_after` without a transition. Either way the job's sandbox (if
//! any) is killed first, so the old build can neither bill nor write (and its writes are fenced by its
//! attempt besides). An expired lease is dropped only once its job is recovered: a recovery cut short (a
//! Postgres blip, a provider error, a crash of this worker) leaves the lease to be found again next pass.

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
    /// Expired leases found.
    pub reclaimed: usize,
    /// Building jobs found without any lease.
    pub orphaned: usize,
    pub requeued: usize,
    pub failed: usize,
    pub sandboxes_killed: usize,
    /// Jobs that needed nothing (finished, gone, leased again or moved on meanwhile).
    pub untouched: usize,
    /// Recoveries that failed; their leases stay, so the next pass tries again.
    pub errors: usize,
}

/// Where a job to recover was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// Its lease is past its deadline (and still there until the recovery is done).
    ExpiredLease,
    /// Building, with no lease at all.
    Orphan,
}

impl Reconciler {
    /// Recovers builds whose lease expired (or was lost): requeued while attempts remain, else failed with
    /// "Build worker lost after N attempt(s)". Every building job is looked at, page by page.
    #[tracing::instrument(skip_all, err)]
    pub async fn recover_expired_leases(
        &self,
        now: DateTime<Utc>,
    ) -> Result<LeaseReport, ReconcileError> {
        let d = &self.deps;
        let mut report = LeaseReport::default();
        let limit = usize::try_from(self.config.scan_limit).unwrap_or(usize::MAX);
        let expired = d.queue.expired_leases(limit).await?;
        report.reclaimed = expired.len();
        for queued in expired {
            self.recover(queued.job_id, Found::ExpiredLease, &mut report)
                .await;
        }

        for status in JobStatus::ALL.into_iter().filter(|s| s.is_building()) {
            for job in self.all_with_status(status).await? {
                if elapsed(job.updated_at, now) < self.config.orphan_after
                    || d.queue.contains(job.id).await?
                {
                    continue;
                }
                report.orphaned += 1;
                tracing::warn!(job_id = %job.id, status = %job.status, "building job has no lease");
                self.recover(job.id, Found::Orphan, &mut report).await;
            }
        }
        Ok(report)
    }

    async fn recover(&self, job_id: JobId, found: Found, report: &mut LeaseReport) {
        if let Err(error) = self.try_recover(job_id, found, report).await {
            report.errors += 1;
            tracing::warn!(%job_id, ?found, error = %error, "could not recover the job; trying again next pass");
        }
    }

    async fn try_recover(
        &self,
        job_id: JobId,
        found: Found,
        report: &mut LeaseReport,
    ) -> Result<(), ReconcileError> {
        let d = &self.deps;
        let job = d.repo.get_job(job_id).await?;
        // A scheduled job is promoted by its own step; a finished one only lost its ack.
        let Some(job) = job.filter(|j| j.status.is_building() || j.status == JobStatus::Queued)
        else {
            self.drop_lease(job_id, found).await?;
            report.untouched += 1;
            return Ok(());
        };
        // Read after the row: a worker that leased the orphan since it was listed owns it now.
        if found == Found::Orphan && d.queue.contains(job_id).await? {
            report.untouched += 1;
            return Ok(());
        }
        let killed = self.kill_build_sandbox(&job, report).await?;
        if job.attempts < self.config.max_build_attempts {
            self.requeue(job, found, report).await
        } else {
            self.fail(job, killed, found, report).await
        }
    }

    /// Ends an expired lease once its job needs nothing more from it.
    async fn drop_lease(&self, job_id: JobId, found: Found) -> Result<(), ReconcileError> {
        if found == Found::ExpiredLease {
            self.deps.queue.drop_expired(job_id).await?;
        }
        Ok(())
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

    async fn requeue(
        &self,
        job: Job,
        found: Found,
        report: &mut LeaseReport,
    ) -> Result<(), ReconcileError> {
        let d = &self.deps;
        let job = if job.status == JobStatus::Queued {
            job
        } else {
            match d.repo.requeue_job(job.id, job.status, job.attempts).await? {
                TransitionOutcome::Applied(job) => *job,
                TransitionOutcome::Conflict { current } => {
                    tracing::info!(job_id = %job.id, ?current, "job moved on; not requeued");
                    self.drop_lease(job.id, found).await?;
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
        // The lease goes first: a job still leased cannot be queued. Postgres says queued now, so if the
        // enqueue fails, rebuild_redis enqueues it later.
        self.drop_lease(job.id, found).await?;
        d.queue.enqueue(&queued_job(&job)).await?;
        report.requeued += 1;
        tracing::info!(job_id = %job.id, attempts = job.attempts, "build requeued after its worker was lost");
        Ok(())
    }

    async fn fail(
        &self,
        job: Job,
        sandbox_killed: bool,
        found: Found,
        report: &mut LeaseReport,
    ) -> Result<(), ReconcileError> {
        let d = &self.deps;
        let error_message = worker_lost_message(job.attempts);
        let update = TransitionUpdate {
            message: Some(JobStatus::Failed.label().to_owned()),
            error_message: Some(error_message.clone()),
            debug_id: Some(DebugId::new()),
            attempt: Some(job.attempts),
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
                self.drop_lease(job.id, found).await?;
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
        self.drop_lease(failed.id, found).await?;
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
