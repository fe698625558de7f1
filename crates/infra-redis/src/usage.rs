//! [`UsageCounters`]: one counter per user and UTC day, expiring when the day ends.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use domain::ports::{DailyUsage, StoreError, UsageCounters};
use domain::UserId;
use fred::prelude::{Client, KeysInterface};

use crate::error::store_err;
use crate::script::LuaScript;
use crate::Keys;

static RECORD_JOB: LuaScript = LuaScript::new(include_str!("lua/record_job.lua"));

/// Daily job counters. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RedisUsage {
    client: Client,
    keys: Keys,
}

impl RedisUsage {
    pub fn new(client: Client, prefix: impl Into<String>) -> Self {
        Self {
            client,
            keys: Keys::new(prefix),
        }
    }
}

/// The UTC day `now` falls in, and the instant it ends (the next 00:00 UTC).
fn day_of(now: DateTime<Utc>) -> (NaiveDate, DateTime<Utc>) {
    let day = now.date_naive();
    let next = day
        .succ_opt()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        // Only the last representable day has no successor.
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    (day, next)
}

fn usage(used: i64, limit: u32, resets_at: DateTime<Utc>) -> DailyUsage {
    DailyUsage {
        used: u32::try_from(used.max(0)).unwrap_or(u32::MAX),
        limit,
        resets_at,
    }
}

#[async_trait]
impl UsageCounters for RedisUsage {
    #[tracing::instrument(skip_all, fields(user_id = %user), err)]
    async fn record_job(&self, user: &UserId, limit: u32) -> Result<DailyUsage, StoreError> {
        let (day, resets_at) = day_of(Utc::now());
        let used: i64 = RECORD_JOB
            .run(
                &self.client,
                vec![self.keys.usage_jobs(user, day)],
                vec![resets_at.timestamp().into()],
            )
            .await
            .map_err(store_err)?;
        Ok(usage(used, limit, resets_at))
    }

    #[tracing::instrument(skip_all, fields(user_id = %user), err)]
    async fn usage(&self, user: &UserId, limit: u32) -> Result<DailyUsage, StoreError> {
        let (day, resets_at) = day_of(Utc::now());
        let used: Option<i64> = self
            .client
            .get(self.keys.usage_jobs(user, day))
            .await
            .map_err(store_err)?;
        Ok(usage(used.unwrap_or(0), limit, resets_at))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn the_day_ends_at_the_next_utc_midnight() {
        let now = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap();
        let (day, next) = day_of(now);
        assert_eq!(day, NaiveDate::from_ymd_opt(2026, 12, 31).unwrap());
        assert_eq!(next, Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap());
    }
}
