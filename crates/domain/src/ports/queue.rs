//! The priority queue with leases and concurrency slots.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::{JobId, ProjectId, Tier, UserId};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The global cap is reached; nothing was enqueued.
    #[error("queue is full; retry in {retry_after_minutes} minutes")]
    Full { retry_after_minutes: u32 },
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    #[error("corrupt queue entry: {0}")]
    Corrupt(String),
}

/// What the queue needs to know of a job to order it and apply its tier's slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedJob {
    pub job_id: JobId,
    pub user_id: UserId,
    pub project_id: ProjectId,
    pub tier: Tier,
}

/// A worker's hold on a job: its user and project slots are taken until ack or requeue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub job: QueuedJob,
    pub worker_id: String,
    pub deadline: DateTime<Utc>,
}

/// Errors: `Unavailable` for any Redis failure.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Adds the job behind its tier's earlier jobs, atomically checking the cap (`Full` past it).
    /// Enqueuing a job already queued or leased is a no-op.
    async fn enqueue(&self, job: &QueuedJob) -> Result<(), QueueError>;

    /// Takes the first job (highest tier, then FIFO) whose user and project have a free slot, in one atomic
    /// step: it leaves the pending set, its slots are taken and a lease with this deadline is recorded.
    /// Jobs passed over for full slots keep their place.
    async fn lease(&self, worker_id: &str, ttl: Duration) -> Result<Option<Lease>, QueueError>;

    /// Extends a lease; `false` when the lease is no longer this worker's: gone, someone else's, or past its
    /// deadline (an expired lease is lost even before the reconciler takes it back, so that a worker that
    /// stalled past its deadline stops instead of racing the recovery).
    async fn heartbeat(&self, lease: &Lease, ttl: Duration) -> Result<bool, QueueError>;

    /// Finishes a lease: releases its slots. Idempotent.
    async fn ack(&self, lease: &Lease) -> Result<(), QueueError>;

    /// Gives a leased job back to the queue at the front of its tier, releasing its slots.
    async fn release(&self, lease: &Lease) -> Result<(), QueueError>;

    /// Removes a job that is still pending (cancel while queued); `true` when it was there.
    async fn remove(&self, job: JobId) -> Result<bool, QueueError>;

    /// Up to `limit` leases whose deadline has passed, oldest deadline first. Nothing is changed: the lease
    /// stays (and its job cannot be queued again) until the caller has recovered the job and calls
    /// [`JobQueue::drop_expired`], so a recovery cut short is found again on the next pass.
    async fn expired_leases(&self, limit: usize) -> Result<Vec<QueuedJob>, QueueError>;

    /// Ends the lease of `job` if its deadline has passed, releasing its slots (its place in the queue is
    /// kept for a re-enqueue); `true` when it did. A lease that is gone, or was renewed meanwhile, is left.
    async fn drop_expired(&self, job: JobId) -> Result<bool, QueueError>;

    /// Whether the job is pending or leased.
    async fn contains(&self, job: JobId) -> Result<bool, QueueError>;

    /// How many jobs are pending.
    async fn pending_len(&self) -> Result<usize, QueueError>;

    /// The job's place among the pending jobs, 1 for the next to be leased; `None` when it is not pending
    /// (leased, finished, removed, or never enqueued).
    async fn position(&self, job: JobId) -> Result<Option<usize>, QueueError>;
}
