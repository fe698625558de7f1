//! A founder's usage of the day, as the API reports it. The count itself lives with the jobs in Postgres
//! ([`crate::quota`], [`crate::ports::JobRepository::insert_admitted_job`]).

use chrono::{DateTime, Utc};

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
