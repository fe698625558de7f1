//! A build's log: live in Redis while the build runs, archived in Postgres once it ends.

use std::time::Duration;

use async_trait::async_trait;

use crate::log::{LogEnd, LogEntry, LogLine, LogLineId, NewLogLine};
use crate::JobId;

/// Wake-ups of a log's follower; ends when the store goes away.
pub type LogWakeups = std::pin::Pin<Box<dyn futures::Stream<Item = ()> + Send>>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// The store could not be reached or failed; the caller may retry.
    #[error("log store unavailable: {0}")]
    Unavailable(String),
    /// A stored entry does not parse.
    #[error("corrupt log entry: {0}")]
    Corrupt(String),
}

/// A job's live log (Redis: one capped stream per job, with a TTL).
///
/// Errors: `Unavailable` for any store failure; `Corrupt` when an entry does not parse.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait LiveLog: Send + Sync {
    /// Appends the lines in order (with ids the store assigns, increasing) and wakes the job's followers.
    async fn append(&self, job: JobId, lines: Vec<NewLogLine>) -> Result<(), LogError>;

    /// Appends the end of the log (after its last line) and wakes the followers.
    async fn end(&self, job: JobId, end: LogEnd) -> Result<(), LogError>;

    /// Up to `count` entries after `after` (from the first when `None`), oldest first.
    async fn read_after(
        &self,
        job: JobId,
        after: Option<LogLineId>,
        count: usize,
    ) -> Result<Vec<LogEntry>, LogError>;

    /// Up to `count` lines before `before` (the newest when `None`), newest first.
    async fn read_before(
        &self,
        job: JobId,
        before: Option<LogLineId>,
        count: usize,
    ) -> Result<Vec<LogLine>, LogError>;

    /// Wakes once per append (or end) made after this returns: the follower then reads what is new. Live
    /// when this returns, so a reader that then reads misses nothing.
    async fn follow(&self, job: JobId) -> Result<LogWakeups, LogError>;

    /// Whether anything of the job's log is still held (lines or its end).
    async fn exists(&self, job: JobId) -> Result<bool, LogError>;

    /// Lets the store drop the log after `after` (it is archived).
    async fn expire(&self, job: JobId, after: Duration) -> Result<(), LogError>;
}

/// A finished job's log as archived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedLog {
    pub lines: Vec<LogLine>,
    pub end: LogEnd,
}

/// Finished jobs' logs, durably (Postgres, compressed).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait LogArchive: Send + Sync {
    /// Stores the job's whole log; a second archive of the same job replaces the first.
    async fn store(&self, job: JobId, log: &ArchivedLog) -> Result<(), LogError>;

    /// The archived log, if any.
    async fn read(&self, job: JobId) -> Result<Option<ArchivedLog>, LogError>;

    /// Deletes the logs archived more than `older_than` ago; answers how many.
    async fn purge(&self, older_than: Duration) -> Result<u64, LogError>;
}
