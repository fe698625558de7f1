//! Step 2: Redis can be rebuilt from Postgres, so a flush or restart loses no job.
//!
//! Queued jobs absent from the queue are enqueued again (enqueueing one already there is a no-op), and a
//! job whose hash is missing, corrupt or older than its row (Redis missed a write: it was unreachable at
//! that moment) gets it written from its row. A hash newer than the row (written after our read) is left:
//! hashes carry the record's revision ([`Job::revision`]), and the store never writes an older one over it.
//!
//! Every job whose live view can still change (queued, scheduled, building) is read on every pass; jobs
//! that have finished (ready, failed) a page per status per pass, continuing where the last pass stopped,
//! so that every hash is checked however many jobs there are, at a bounded cost per pass.

use super::leases::queued_job;
use super::{Pages, ReconcileError, Reconciler};
use crate::ports::{PageAfter, QueueError, StoreError};
use crate::{Job, JobStatus};

/// What the rebuild step restored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebuildReport {
    /// Queued jobs put back into the queue.
    pub requeued: usize,
    /// Hashes written from Postgres (missing, corrupt or stale ones).
    pub hashes_rebuilt: usize,
    /// Queued jobs the queue refused (full); retried next run.
    pub queue_full: usize,
    pub errors: usize,
}

impl Reconciler {
    /// Restores the queue and the live hashes from Postgres.
    #[tracing::instrument(skip_all, err)]
    pub async fn rebuild_redis(&self) -> Result<RebuildReport, ReconcileError> {
        let mut report = RebuildReport::default();
        for status in JobStatus::ALL {
            if status.is_terminal() {
                let after = self.rebuild_cursor(status);
                let mut pages = Pages { after, done: false };
                let page = self
                    .page_by_status(status, &mut pages)
                    .await?
                    .unwrap_or_default();
                // Past the last page, the next pass starts again from the first.
                let next = if pages.done { None } else { pages.after };
                self.set_rebuild_cursor(status, next);
                self.rebuild_jobs(page, &mut report).await?;
            } else {
                let mut pages = Pages::default();
                while let Some(page) = self.page_by_status(status, &mut pages).await? {
                    self.rebuild_jobs(page, &mut report).await?;
                }
            }
        }
        Ok(report)
    }

    async fn rebuild_jobs(
        &self,
        jobs: Vec<Job>,
        report: &mut RebuildReport,
    ) -> Result<(), ReconcileError> {
        let d = &self.deps;
        for job in jobs {
            if job.status == JobStatus::Queued && !d.queue.contains(job.id).await? {
                match d.queue.enqueue(&queued_job(&job)).await {
                    Ok(()) => {
                        report.requeued += 1;
                        tracing::info!(job_id = %job.id, "queued job restored to the queue");
                    }
                    Err(QueueError::Full { .. }) => report.queue_full += 1,
                    Err(error) => return Err(error.into()),
                }
            }
            let stale = match d.live.get(job.id).await {
                Ok(Some(hash)) => hash.revision() < job.revision(),
                Ok(None) => true,
                Err(StoreError::Corrupt(reason)) => {
                    tracing::warn!(job_id = %job.id, %reason, "corrupt live hash; rewriting it");
                    true
                }
                Err(error) => return Err(error.into()),
            };
            if stale {
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
        Ok(())
    }

    fn rebuild_cursor(&self, status: JobStatus) -> Option<PageAfter> {
        let cursors = self
            .rebuild_cursors
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        cursors.get(&status).copied()
    }

    fn set_rebuild_cursor(&self, status: JobStatus, after: Option<PageAfter>) {
        let mut cursors = self
            .rebuild_cursors
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match after {
            Some(after) => cursors.insert(status, after),
            None => cursors.remove(&status),
        };
    }
}

#[cfg(test)]
#[path = "rebuild_tests.rs"]
mod tests;
