//! The routes, one module per group, and what they share: loading a job the caller owns.

pub mod generation;
pub mod health;
pub mod jobs;
pub mod lifecycle;
pub mod logs;
pub mod projects;
pub mod wire;

use domain::ports::{LiveJobStore, QueueError, RepoError, StoreError};
use domain::{Job, JobId, UserId};

use crate::error::ApiError;
use crate::AppState;

/// The job if `user` owns it, from the live hash; when the hash is missing (or unreadable), from Postgres,
/// writing the hash back. Another user's job is `Job not found`, exactly like a missing one.
pub async fn load_owned_job(state: &AppState, user: &UserId, id: JobId) -> Result<Job, ApiError> {
    load_owned_job_from(state.live.as_ref(), state, user, id).await
}

/// [`load_owned_job`], reading the live view through `live` (the status route passes its cache).
pub async fn load_owned_job_from(
    live: &dyn LiveJobStore,
    state: &AppState,
    user: &UserId,
    id: JobId,
) -> Result<Job, ApiError> {
    match live.get(id).await {
        Ok(Some(job)) if &job.user_id == user => return Ok(job),
        Ok(Some(_)) => return Err(ApiError::job_not_found()),
        Ok(None) => {}
        Err(error) => {
            tracing::warn!(job_id = %id, error = %error, "live job hash unreadable; reading postgres");
        }
    }
    let job = state
        .repo
        .get_job_for_user(id, user)
        .await?
        .ok_or_else(ApiError::job_not_found)?;
    if let Err(error) = live.save(&job).await {
        tracing::warn!(job_id = %id, error = %error, "live job hash not rebuilt");
    }
    Ok(job)
}

impl From<RepoError> for ApiError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::Unavailable(_) => ApiError::Unavailable(e.into()),
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => ApiError::Unavailable(e.into()),
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Full {
                retry_after_minutes,
            } => ApiError::Busy(domain::usecases::submit::busy_message(retry_after_minutes)),
            QueueError::Unavailable(_) => ApiError::Unavailable(e.into()),
            other => ApiError::Internal(other.into()),
        }
    }
}
