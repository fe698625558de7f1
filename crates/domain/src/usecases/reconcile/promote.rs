//! Step 3: scheduled jobs (submitted past the daily limit) are queued after the daily reset.
//!
//! The jitter is a fixed per-job offset in `[0, promote_jitter]` after midnight UTC, derived from the job
//! id: promotions spread over the window without any sleeping, and every worker agrees on each job's time.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::leases::queued_job;
use super::{ReconcileError, Reconciler};
use crate::ports::{QueueError, TransitionOutcome, TransitionUpdate};
use crate::{JobEvent, JobId, JobStatus};

/// What the promote step did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PromoteReport {
    pub promoted: usize,
    /// Due after today's reset but still inside their jitter offset.
    pub waiting_for_jitter: usize,
    /// Promoted in Postgres but refused by a full queue; rebuild_redis enqueues them later.
    pub queue_full: usize,
    pub errors: usize,
}

impl Reconciler {
    /// Moves jobs scheduled before today's midnight (UTC) to queued and enqueues them, each once its jitter
    /// offset has passed.
    #[tracing::instrument(skip_all, err)]
    pub async fn promote_scheduled(
        &self,
        now: DateTime<Utc>,
    ) -> Result<PromoteReport, ReconcileError> {
        let d = &self.deps;
        let midnight = now
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc())
            .unwrap_or(now);
        let mut report = PromoteReport::default();
        let scheduled = self.all_with_status(JobStatus::Scheduled).await?;
        for job in scheduled {
            if job.created_at >= midnight {
                continue;
            }
            let jitter = jitter(job.id, self.config.promote_jitter);
            let due_at = midnight + chrono::Duration::from_std(jitter).unwrap_or_default();
            if now < due_at {
                report.waiting_for_jitter += 1;
                continue;
            }
            // A promoted job counts against the day it runs, not the day it was submitted.
            let update = TransitionUpdate {
                message: Some(JobStatus::Queued.label().to_owned()),
                counted_on: Some(now.date_naive()),
                ..TransitionUpdate::default()
            };
            let queued = match d
                .repo
                .transition(job.id, JobStatus::Scheduled, JobStatus::Queued, update)
                .await
            {
                Ok(TransitionOutcome::Applied(job)) => *job,
                Ok(TransitionOutcome::Conflict { .. }) => continue,
                Err(error) => {
                    report.errors += 1;
                    tracing::warn!(job_id = %job.id, error = %error, "could not promote");
                    continue;
                }
            };
            let event = JobEvent {
                job_id: queued.id,
                status: JobStatus::Queued,
                message: JobStatus::Queued.label().to_owned(),
                preview_url: None,
                timestamp: now,
            };
            if let Err(error) = d.live.save_and_publish(&queued, &event).await {
                tracing::warn!(job_id = %queued.id, error = %error, "could not mirror the promotion");
            }
            report.promoted += 1;
            tracing::info!(job_id = %queued.id, jitter_secs = jitter.as_secs(), "scheduled job promoted");
            match d.queue.enqueue(&queued_job(&queued)).await {
                Ok(()) => {}
                Err(QueueError::Full { .. }) => report.queue_full += 1,
                Err(error) => {
                    report.errors += 1;
                    tracing::warn!(job_id = %queued.id, error = %error, "could not enqueue a promoted job");
                }
            }
        }
        Ok(report)
    }
}

/// The job's fixed offset into the promotion window.
pub(super) fn jitter(job_id: JobId, window: Duration) -> Duration {
    let secs = window.as_secs();
    if secs == 0 {
        return Duration::ZERO;
    }
    Duration::from_secs((job_id.as_uuid().as_u128() % u128::from(secs + 1)) as u64)
}

#[cfg(test)]
#[path = "promote_tests.rs"]
mod tests;
