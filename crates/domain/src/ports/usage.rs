//! Daily usage counters per user.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::ports::StoreError;
use crate::UserId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyUsage {
    pub used: u32,
    pub limit: u32,
    pub resets_at: DateTime<Utc>,
}

impl DailyUsage {
    pub fn remaining(&self) -> u32 {
        self.limit.saturating_sub(self.used)
    }
}

/// Errors: `Unavailable` for any Redis failure.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait UsageCounters: Send + Sync {
    /// Counts one job for today (UTC) and returns the usage including it, atomically. The caller compares
    /// against the limit: a count past the limit means the job is scheduled for tomorrow.
    async fn record_job(&self, user: &UserId, limit: u32) -> Result<DailyUsage, StoreError>;

    /// Today's usage without counting anything.
    async fn usage(&self, user: &UserId, limit: u32) -> Result<DailyUsage, StoreError>;
}
