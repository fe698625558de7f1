//! [`JobQueue`] over Redis: every operation one Lua script over keys sharing the `{q}` hash tag.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use domain::ports::{JobQueue, Lease, QueueError, QueuedJob};
use domain::{JobId, ProjectId, Tier, TierTable, UserId};
use fred::prelude::{Client, SortedSetsInterface, Value};

use super::scripts::{
    retry_after_minutes, tier_base_score, CONTAINS, DROP_EXPIRED, ENQUEUE, EXPIRED, FINISH,
    HEARTBEAT, LEASE, REMOVE,
};
use crate::error::queue_err;
use crate::Keys;

/// How long a reclaimed job's queue meta is kept for a re-enqueue to restore its place.
const RECLAIMED_META_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// The job queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RedisQueue {
    client: Client,
    keys: Keys,
    tiers: TierTable,
}

impl RedisQueue {
    /// `tiers` sets each tier's priority and slot limits, and the cap on pending jobs.
    pub fn new(client: Client, prefix: impl Into<String>, tiers: TierTable) -> Self {
        Self {
            client,
            keys: Keys::new(prefix),
            tiers,
        }
    }

    async fn finish(&self, lease: &Lease, mode: &str) -> Result<i64, QueueError> {
        let k = &self.keys;
        FINISH
            .run(
                &self.client,
                vec![
                    k.queue_leases(),
                    k.queue_owners(),
                    k.queue_meta(),
                    k.queue_pending(),
                    k.queue_reclaimed(),
                ],
                vec![
                    lease.job.job_id.to_string().into(),
                    lease.worker_id.as_str().into(),
                    k.queue_slots_prefix().into(),
                    lease.job.user_id.as_str().into(),
                    lease.job.project_id.to_string().into(),
                    mode.into(),
                ],
            )
            .await
            .map_err(queue_err)
    }
}

fn ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
}

fn deadline(ms: i64) -> Result<DateTime<Utc>, QueueError> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| QueueError::Corrupt(format!("lease deadline {ms} is out of range")))
}

/// A queued job from the strings the scripts return.
fn queued_job(id: &str, user: &str, project: &str, tier: &str) -> Result<QueuedJob, QueueError> {
    let corrupt = |e: String| QueueError::Corrupt(format!("queue entry {id}: {e}"));
    Ok(QueuedJob {
        job_id: JobId::parse(id).map_err(|e| corrupt(e.to_string()))?,
        user_id: UserId::try_from(user).map_err(|e| corrupt(e.to_string()))?,
        project_id: ProjectId::parse(project).map_err(|e| corrupt(e.to_string()))?,
        tier: Tier::try_from(tier).map_err(|e| corrupt(e.to_string()))?,
    })
}

#[async_trait]
impl JobQueue for RedisQueue {
    #[tracing::instrument(skip_all, fields(job_id = %job.job_id, user_id = %job.user_id), err)]
    async fn enqueue(&self, job: &QueuedJob) -> Result<(), QueueError> {
        let k = &self.keys;
        let cap = self.tiers.queue_cap as u64;
        let (outcome, len): (i64, i64) = ENQUEUE
            .run(
                &self.client,
                vec![
                    k.queue_pending(),
                    k.queue_leases(),
                    k.queue_meta(),
                    k.queue_counter(),
                    k.queue_reclaimed(),
                ],
                vec![
                    job.job_id.to_string().into(),
                    tier_base_score(self.tiers.limits(job.tier))
                        .to_string()
                        .into(),
                    cap.to_string().into(),
                    job.user_id.as_str().into(),
                    job.project_id.to_string().into(),
                    job.tier.as_str().into(),
                ],
            )
            .await
            .map_err(queue_err)?;
        match outcome {
            -1 => Err(QueueError::Full {
                retry_after_minutes: retry_after_minutes(len.max(0) as u64, cap),
            }),
            0 => {
                tracing::debug!("already queued or leased");
                Ok(())
            }
            _ => Ok(()),
        }
    }

    #[tracing::instrument(skip_all, fields(worker_id = worker_id, job_id), err)]
    async fn lease(&self, worker_id: &str, ttl: Duration) -> Result<Option<Lease>, QueueError> {
        let k = &self.keys;
        let mut args: Vec<Value> = vec![
            worker_id.into(),
            ms(ttl).into(),
            k.queue_slots_prefix().into(),
        ];
        for tier in Tier::ALL {
            let limits = self.tiers.limits(tier);
            args.push(tier.as_str().into());
            args.push(i64::from(limits.user_concurrency).into());
            args.push(i64::from(limits.project_concurrency).into());
        }
        let taken: Option<(String, String, String, String, i64)> = LEASE
            .run(
                &self.client,
                vec![
                    k.queue_pending(),
                    k.queue_leases(),
                    k.queue_meta(),
                    k.queue_owners(),
                ],
                args,
            )
            .await
            .map_err(queue_err)?;
        let Some((id, user, project, tier, deadline_ms)) = taken else {
            return Ok(None);
        };
        tracing::Span::current().record("job_id", id.as_str());
        Ok(Some(Lease {
            job: queued_job(&id, &user, &project, &tier)?,
            worker_id: worker_id.to_owned(),
            deadline: deadline(deadline_ms)?,
        }))
    }

    #[tracing::instrument(skip_all, fields(job_id = %lease.job.job_id, worker_id = lease.worker_id), err)]
    async fn heartbeat(&self, lease: &Lease, ttl: Duration) -> Result<bool, QueueError> {
        let k = &self.keys;
        let extended: Option<i64> = HEARTBEAT
            .run(
                &self.client,
                vec![k.queue_leases(), k.queue_owners()],
                vec![
                    lease.job.job_id.to_string().into(),
                    lease.worker_id.as_str().into(),
                    ms(ttl).into(),
                ],
            )
            .await
            .map_err(queue_err)?;
        Ok(extended.is_some())
    }

    #[tracing::instrument(skip_all, fields(job_id = %lease.job.job_id, worker_id = lease.worker_id), err)]
    async fn ack(&self, lease: &Lease) -> Result<(), QueueError> {
        if self.finish(lease, "ack").await? == 0 {
            tracing::debug!("lease already finished or no longer this worker's");
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(job_id = %lease.job.job_id, worker_id = lease.worker_id), err)]
    async fn release(&self, lease: &Lease) -> Result<(), QueueError> {
        match self.finish(lease, "release").await? {
            0 => tracing::debug!("lease already finished or no longer this worker's"),
            2 => tracing::warn!("queue meta missing; lease ended but job not requeued"),
            _ => {}
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(job_id = %job), err)]
    async fn remove(&self, job: JobId) -> Result<bool, QueueError> {
        let k = &self.keys;
        let removed: i64 = REMOVE
            .run(
                &self.client,
                vec![
                    k.queue_pending(),
                    k.queue_leases(),
                    k.queue_meta(),
                    k.queue_reclaimed(),
                ],
                vec![job.to_string().into()],
            )
            .await
            .map_err(queue_err)?;
        Ok(removed == 1)
    }

    #[tracing::instrument(skip_all, err)]
    async fn expired_leases(&self, limit: usize) -> Result<Vec<QueuedJob>, QueueError> {
        let k = &self.keys;
        let flat: Vec<String> = EXPIRED
            .run(
                &self.client,
                vec![
                    k.queue_leases(),
                    k.queue_meta(),
                    k.queue_reclaimed(),
                    k.queue_pending(),
                ],
                vec![
                    i64::try_from(limit).unwrap_or(i64::MAX).into(),
                    ms(RECLAIMED_META_RETENTION).into(),
                ],
            )
            .await
            .map_err(queue_err)?;
        let mut jobs = Vec::with_capacity(flat.len() / 4);
        for entry in flat.chunks_exact(4) {
            match queued_job(&entry[0], &entry[1], &entry[2], &entry[3]) {
                Ok(job) => jobs.push(job),
                // Without its meta the lease cannot be recovered from here; dropped, its job is found by the
                // reconciler's sweep of building jobs without a lease (and queued ones by the rebuild).
                Err(error) => {
                    tracing::warn!(job_id = %entry[0], %error, "expired lease without usable meta; dropped");
                    if let Ok(id) = JobId::parse(&entry[0]) {
                        self.drop_expired(id).await?;
                    }
                }
            }
        }
        Ok(jobs)
    }

    #[tracing::instrument(skip_all, fields(job_id = %job), err)]
    async fn drop_expired(&self, job: JobId) -> Result<bool, QueueError> {
        let k = &self.keys;
        let dropped: i64 = DROP_EXPIRED
            .run(
                &self.client,
                vec![
                    k.queue_leases(),
                    k.queue_owners(),
                    k.queue_meta(),
                    k.queue_reclaimed(),
                ],
                vec![job.to_string().into(), k.queue_slots_prefix().into()],
            )
            .await
            .map_err(queue_err)?;
        Ok(dropped == 1)
    }

    #[tracing::instrument(skip_all, fields(job_id = %job), err)]
    async fn contains(&self, job: JobId) -> Result<bool, QueueError> {
        let k = &self.keys;
        let found: i64 = CONTAINS
            .run(
                &self.client,
                vec![k.queue_pending(), k.queue_leases()],
                vec![job.to_string().into()],
            )
            .await
            .map_err(queue_err)?;
        Ok(found == 1)
    }

    #[tracing::instrument(skip_all, err)]
    async fn pending_len(&self) -> Result<usize, QueueError> {
        let len: u64 = self
            .client
            .zcard(self.keys.queue_pending())
            .await
            .map_err(queue_err)?;
        Ok(usize::try_from(len).unwrap_or(usize::MAX))
    }

    #[tracing::instrument(skip_all, fields(job_id = %job), err)]
    async fn position(&self, job: JobId) -> Result<Option<usize>, QueueError> {
        // Scores order the pending set as lease takes from it (tier first, then FIFO), so the rank is the place.
        let rank: Option<u64> = self
            .client
            .zrank(self.keys.queue_pending(), job.to_string(), false)
            .await
            .map_err(queue_err)?;
        Ok(rank.map(|r| usize::try_from(r).unwrap_or(usize::MAX).saturating_add(1)))
    }
}
