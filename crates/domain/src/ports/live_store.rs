//! The live view: the Redis hash the status route reads, and the event channel SSE streams follow.
//! Everything here can be rebuilt from the repository.

use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;

use crate::{Job, JobEvent, JobId};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("live store unavailable: {0}")]
    Unavailable(String),
    /// A stored value does not parse; callers fall back to the repository.
    #[error("corrupt live record: {0}")]
    Corrupt(String),
}

/// A job's events in publication order. Ends when the subscription is dropped or the store goes away.
pub type EventStream = Pin<Box<dyn Stream<Item = JobEvent> + Send>>;

/// Errors: `Unavailable` for any Redis failure; `Corrupt` when a hash does not parse.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait LiveJobStore: Send + Sync {
    /// Writes the whole hash `job:{id}` from the record (Postgres first, then this).
    async fn save(&self, job: &Job) -> Result<(), StoreError>;

    /// Writes the hash and publishes the event on `job:{id}:events`, atomically; an event that says
    /// `failed` goes to the failures channel too (see [`LiveJobStore::subscribe_failures`]).
    async fn save_and_publish(&self, job: &Job, event: &JobEvent) -> Result<(), StoreError>;

    /// Reads the hash back; `None` when it is missing.
    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError>;

    /// Subscribes to the job's events. The subscription is live when this returns, so a caller that then
    /// reads the current state misses nothing.
    async fn subscribe(&self, id: JobId) -> Result<EventStream, StoreError>;

    /// Subscribes to every job's `failed` event (a cancel from the API, or a build that failed) on one
    /// channel, so that a worker follows all its builds with one subscription rather than one per build.
    /// Live when this returns.
    async fn subscribe_failures(&self) -> Result<EventStream, StoreError>;

    async fn delete(&self, id: JobId) -> Result<(), StoreError>;
}
