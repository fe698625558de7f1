//! Step 2: Redis can be rebuilt from Postgres, so a flush or restart loses no job.
//!
//! Queued jobs absent from the queue are enqueued again (enqueueing one already there is a no-op), and a
//! job whose hash is missing or corrupt gets it written from its row. Only missing hashes are written: a
//! hash that exists may be newer than the row we read a moment ago, and overwriting it could undo a write.

use super::leases::queued_job;
use super::{ReconcileError, Reconciler};
use crate::ports::{QueueError, StoreError};
use crate::JobStatus;

/// What the rebuild step restored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebuildReport {
    /// Queued jobs put back into the queue.
    pub requeued: usize,
    /// Hashes written from Postgres.
    pub hashes_rebuilt: usize,
    /// Queued jobs the queue refused (full); retried next run.
    pub queue_full: usize,
    pub errors: usize,
}

impl Reconciler {
    /// Restores the queue and the live hashes from Postgres (the newest `scan_limit` jobs of each status).
    #[tracing::instrument(skip_all, err)]
    pub async fn rebuild_redis(&self) -> Result<RebuildReport, ReconcileError> {
        let d = &self.deps;
        let mut report = RebuildReport::default();
        for status in JobStatus::ALL {
            for job in d
                .repo
                .list_jobs_by_status(status, self.config.scan_limit)
                .await?
            {
                if status == JobStatus::Queued && !d.queue.contains(job.id).await? {
                    match d.queue.enqueue(&queued_job(&job)).await {
                        Ok(()) => {
                            report.requeued += 1;
                            tracing::info!(job_id = %job.id, "queued job restored to the queue");
                        }
                        Err(QueueError::Full { .. }) => report.queue_full += 1,
                        Err(error) => return Err(error.into()),
                    }
                }
                let missing = match d.live.get(job.id).await {
                    Ok(hash) => hash.is_none(),
                    Err(StoreError::Corrupt(reason)) => {
                        tracing::warn!(job_id = %job.id, %reason, "corrupt live hash; rewriting it");
                        true
                    }
                    Err(error) => return Err(error.into()),
                };
                if missing {
                    match d.live.save(&job).await {
                        Ok(()) => {
                            report.hashes_rebuilt += 1;
                            tracing::info!(job_id = %job.id, status = %job.status, "live hash rebuilt");
                        }
                        Err(error) => {
                            report.errors += 1;
                            tracing::warn!(job_id = %job.id, error = %error, "could not rebuild the hash");
                        }
                    }
                }
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
#[path = "rebuild_tests.rs"]
mod tests;
