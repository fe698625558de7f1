//! Submitting a build: ownership, the queue cap, the daily quota, the durable row, the live view, the queue.
//!
//! Postgres is written first (the system of record), then the Redis hash, then the queue. The daily quota
//! ([`crate::quota`]) is decided and counted in the same transaction as the insert, so a submit that fails
//! costs nothing. The queue's atomic enqueue is the authority on the cap: when it refuses, the row that was
//! just inserted is failed (compare-and-set) so that no job is left `queued` without being in the queue.

use chrono::Utc;
use tracing::{field, Span};

use crate::ports::{
    Admitted, DailyUsage, JobQueue, JobRepository, LiveJobStore, QueueError, QueuedJob, RepoError,
    TransitionOutcome, TransitionUpdate,
};
use crate::quota::{utc_day, DailyQuota};
use crate::{
    Job, JobEvent, JobGoal, JobId, JobStatus, NewJob, ProjectId, ProjectStatus, Tier, TierTable,
    UserId,
};

pub use crate::quota::SCHEDULED_MESSAGE;

/// What submitting needs.
#[derive(Clone, Copy)]
pub struct SubmitDeps<'a> {
    pub repo: &'a dyn JobRepository,
    pub live: &'a dyn LiveJobStore,
    pub queue: &'a dyn JobQueue,
    pub tiers: &'a TierTable,
}

/// An accepted submission.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    /// As inserted: `queued`, or `scheduled` past the daily limit.
    pub job: Job,
    /// The version the build will get when it is READY (a prediction).
    pub build_version: String,
    /// Today's usage, this job included.
    pub usage: DailyUsage,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubmitError {
    /// The project does not exist, belongs to someone else or was deleted.
    #[error("project not found")]
    ProjectNotFound,
    /// The queue is at its cap; nothing is left queued.
    #[error("system busy; retry in {retry_after_minutes} minutes")]
    Busy { retry_after_minutes: u32 },
    /// Past the daily limit with `scheduled` jobs already waiting for a later day (the cap): nothing is
    /// created or counted.
    #[error("{scheduled} jobs are already scheduled")]
    TooManyScheduled { scheduled: u32 },
    #[error("job repository failed")]
    Repo(#[source] RepoError),
    #[error("job queue failed")]
    Queue(#[source] QueueError),
}

/// The message a job refused at the cap is failed with (and the 503's detail).
pub fn busy_message(retry_after_minutes: u32) -> String {
    format!("System busy. Try again in {retry_after_minutes} minutes.")
}

/// How long to wait when `pending` jobs are queued against a cap of `cap` (two minutes per five jobs
/// over, at least one minute).
pub fn retry_after_minutes(pending: usize, cap: usize) -> u32 {
    let over = pending.saturating_sub(cap) + 1;
    u32::try_from(over * 2 / 5).unwrap_or(u32::MAX).max(1)
}

/// Submits a build of `project_id` for `user`.
#[tracing::instrument(
    skip_all,
    fields(user_id = %user, project_id = %project_id, tier = %tier, job_id = field::Empty),
    err
)]
pub async fn submit_job(
    deps: SubmitDeps<'_>,
    user: &UserId,
    tier: Tier,
    project_id: ProjectId,
    goal: JobGoal,
) -> Result<Submitted, SubmitError> {
    let project = deps
        .repo
        .get_project_for_user(project_id, user)
        .await
        .map_err(SubmitError::Repo)?
        .filter(|p| p.status != ProjectStatus::Deleted)
        .ok_or(SubmitError::ProjectNotFound)?;

    // A cheap early refusal, before a row or a usage count is spent; the enqueue below stays the authority.
    let pending = deps.queue.pending_len().await.map_err(SubmitError::Queue)?;
    if pending >= deps.tiers.queue_cap {
        return Err(SubmitError::Busy {
            retry_after_minutes: retry_after_minutes(pending, deps.tiers.queue_cap),
        });
    }

    let limit = deps.tiers.limits(tier).daily_jobs;
    let (day, resets_at) = utc_day(Utc::now());
    let quota = DailyQuota {
        day,
        daily_jobs: limit,
        scheduled_cap: deps.tiers.scheduled_cap,
    };

    let build_version = project.next_build_version().label();

    let id = JobId::new();
    Span::current().record("job_id", field::display(id));
    let new_job = NewJob {
        id,
        project_id,
        user_id: user.clone(),
        tier,
        goal,
        // The admission decides; these are the repository's to set.
        status: JobStatus::Queued,
        status_message: None,
    };
    let (job, counted_today) = match deps.repo.insert_admitted_job(&new_job, quota).await {
        Ok(Admitted::Inserted { job, counted_today }) => (*job, counted_today),
        Ok(Admitted::TooManyScheduled { scheduled }) => {
            return Err(SubmitError::TooManyScheduled { scheduled })
        }
        Err(RepoError::NotFound) => return Err(SubmitError::ProjectNotFound),
        Err(e) => return Err(SubmitError::Repo(e)),
    };
    let scheduled = job.status == JobStatus::Scheduled;
    // A scheduled job counts against the day it is promoted, but the answer shows it as one over today's
    // limit (the Python API's `jobs_used` 6 of 5).
    let usage = DailyUsage {
        used: counted_today + u32::from(scheduled),
        limit,
        resets_at,
    };

    // The hash is a view that the status route rebuilds from Postgres when it is missing.
    if let Err(error) = deps.live.save(&job).await {
        tracing::warn!(error = %error, "live job hash not written; status will fall back to postgres");
    }

    if scheduled {
        return Ok(Submitted {
            job,
            build_version,
            usage,
        });
    }

    let queued = QueuedJob {
        job_id: id,
        user_id: user.clone(),
        project_id,
        tier,
    };
    match deps.queue.enqueue(&queued).await {
        Ok(()) => Ok(Submitted {
            job,
            build_version,
            usage,
        }),
        Err(QueueError::Full {
            retry_after_minutes,
        }) => {
            fail_unqueued(deps, &job, &busy_message(retry_after_minutes)).await?;
            Err(SubmitError::Busy {
                retry_after_minutes,
            })
        }
        Err(other) => {
            fail_unqueued(deps, &job, "Queue unavailable").await?;
            Err(SubmitError::Queue(other))
        }
    }
}

/// Fails a job the queue refused, so it does not stay `queued` outside the queue, and gives its count back.
async fn fail_unqueued(deps: SubmitDeps<'_>, job: &Job, message: &str) -> Result<(), SubmitError> {
    let update = TransitionUpdate {
        message: Some(message.to_owned()),
        error_message: Some(message.to_owned()),
        refund_quota: true,
        ..TransitionUpdate::default()
    };
    let outcome = deps
        .repo
        .transition(job.id, JobStatus::Queued, JobStatus::Failed, update)
        .await
        .map_err(SubmitError::Repo)?;
    match outcome {
        TransitionOutcome::Applied(failed) => {
            let event = JobEvent {
                job_id: failed.id,
                status: failed.status,
                message: message.to_owned(),
                preview_url: None,
                timestamp: Utc::now(),
            };
            if let Err(error) = deps.live.save_and_publish(&failed, &event).await {
                tracing::warn!(error = %error, "live job hash not updated after refusal");
            }
        }
        // Nobody else can hold a job that never reached the queue; log it rather than guess.
        TransitionOutcome::Conflict { current } => {
            tracing::warn!(current = ?current, "refused job was no longer queued");
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "submit_tests.rs"]
mod tests;
