//! The daily quota: how many builds a founder starts per UTC day, and how many may wait for a later day.
//!
//! A job counts against the UTC day it is queued on: the day it is submitted when it is queued at once, the
//! day it is promoted when it was scheduled. It is counted in the same write that creates (or promotes) it,
//! so a refused submit costs nothing. Past the daily limit a job is scheduled, while fewer than
//! [`TierTable::scheduled_cap`](crate::TierTable) of the founder's jobs are waiting; past that it is
//! refused.

use chrono::{DateTime, NaiveDate, Utc};

use crate::JobStatus;

/// The status message of a job past its tier's daily limit.
pub const SCHEDULED_MESSAGE: &str = "Scheduled for tomorrow";

/// What one submit is admitted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyQuota {
    /// The UTC day the job would count against.
    pub day: NaiveDate,
    /// The founder's tier's daily limit.
    pub daily_jobs: u32,
    /// The most of the founder's jobs that may be scheduled at once.
    pub scheduled_cap: u32,
}

/// The founder's jobs as the quota counts them, read under the same lock as the insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaCounts {
    /// Jobs counted against [`DailyQuota::day`].
    pub counted_today: u32,
    /// Jobs scheduled (waiting for a later day).
    pub scheduled: u32,
}

/// What the quota does with one more job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Queued now, and counted against today.
    Queue,
    /// Scheduled; counted against the day it is promoted.
    Schedule,
    /// Refused: the founder already has [`DailyQuota::scheduled_cap`] jobs waiting.
    Refuse,
}

impl DailyQuota {
    pub fn admit(&self, counts: QuotaCounts) -> Admission {
        if counts.counted_today < self.daily_jobs {
            Admission::Queue
        } else if counts.scheduled < self.scheduled_cap {
            Admission::Schedule
        } else {
            Admission::Refuse
        }
    }
}

impl Admission {
    /// The status and status message a job admitted so is inserted with (`None` when refused).
    pub fn status(self) -> Option<(JobStatus, Option<&'static str>)> {
        match self {
            Admission::Queue => Some((JobStatus::Queued, None)),
            Admission::Schedule => Some((JobStatus::Scheduled, Some(SCHEDULED_MESSAGE))),
            Admission::Refuse => None,
        }
    }
}

/// The UTC day `now` falls in, and the instant it ends (the next 00:00 UTC): when the daily limit resets.
pub fn utc_day(now: DateTime<Utc>) -> (NaiveDate, DateTime<Utc>) {
    let day = now.date_naive();
    let next = day
        .succ_opt()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        // Only the last representable day has no successor.
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    (day, next)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn under_the_limit_queues_then_schedules_up_to_the_cap() {
        let quota = DailyQuota {
            day: NaiveDate::from_ymd_opt(2026, 12, 3).unwrap(),
            daily_jobs: 2,
            scheduled_cap: 3,
        };
        let admit = |counted_today, scheduled| {
            quota.admit(QuotaCounts {
                counted_today,
                scheduled,
            })
        };
        assert_eq!(admit(0, 0), Admission::Queue);
        assert_eq!(admit(1, 3), Admission::Queue);
        assert_eq!(admit(2, 0), Admission::Schedule);
        assert_eq!(admit(2, 2), Admission::Schedule);
        assert_eq!(admit(2, 3), Admission::Refuse);
        assert_eq!(admit(9, 9), Admission::Refuse);
    }

    #[test]
    fn the_day_ends_at_the_next_utc_midnight() {
        let now = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap();
        let (day, next) = utc_day(now);
        assert_eq!(day, NaiveDate::from_ymd_opt(2026, 12, 31).unwrap());
        assert_eq!(next, Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap());
    }
}
