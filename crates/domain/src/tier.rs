//! Subscription tiers and their limits. The defaults live here, once; deployments may override them.

use std::fmt;

/// The most jobs waiting in the queue at once.
pub const GLOBAL_QUEUE_CAP: usize = 100;

/// The most jobs one founder may have scheduled (past the daily limit, waiting for a later day) at once.
pub const SCHEDULED_CAP: u32 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    Bootstrapper,
    Partner,
    CtoScale,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown tier {0:?}")]
pub struct UnknownTier(pub String);

/// What one tier may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierLimits {
    pub user_concurrency: u32,
    pub project_concurrency: u32,
    pub daily_jobs: u32,
    /// Subtracted from 1000 in the queue score: a higher boost is served first.
    pub priority_boost: u32,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Bootstrapper, Tier::Partner, Tier::CtoScale];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Bootstrapper => "bootstrapper",
            Tier::Partner => "partner",
            Tier::CtoScale => "cto_scale",
        }
    }

    pub fn default_limits(self) -> TierLimits {
        match self {
            Tier::Bootstrapper => TierLimits {
                user_concurrency: 2,
                project_concurrency: 2,
                daily_jobs: 5,
                priority_boost: 0,
            },
            Tier::Partner => TierLimits {
                user_concurrency: 3,
                project_concurrency: 3,
                daily_jobs: 50,
                priority_boost: 2,
            },
            Tier::CtoScale => TierLimits {
                user_concurrency: 10,
                project_concurrency: 5,
                daily_jobs: 200,
                priority_boost: 5,
            },
        }
    }
}

impl TryFrom<&str> for Tier {
    type Error = UnknownTier;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Tier::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownTier(s.to_owned()))
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The limits in force: the defaults, or a deployment's (and a test's or benchmark's) own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierTable {
    pub bootstrapper: TierLimits,
    pub partner: TierLimits,
    pub cto_scale: TierLimits,
    pub queue_cap: usize,
    /// The most jobs one founder may have scheduled at once ([`crate::quota`]).
    pub scheduled_cap: u32,
}

impl Default for TierTable {
    fn default() -> Self {
        Self {
            bootstrapper: Tier::Bootstrapper.default_limits(),
            partner: Tier::Partner.default_limits(),
            cto_scale: Tier::CtoScale.default_limits(),
            queue_cap: GLOBAL_QUEUE_CAP,
            scheduled_cap: SCHEDULED_CAP,
        }
    }
}

impl TierTable {
    pub fn limits(&self, tier: Tier) -> TierLimits {
        match tier {
            Tier::Bootstrapper => self.bootstrapper,
            Tier::Partner => self.partner,
            Tier::CtoScale => self.cto_scale,
        }
    }

    /// Every limit multiplied out to "effectively none" (benchmarks measure Slipway, not the limits).
    pub fn unlimited() -> Self {
        let big = TierLimits {
            user_concurrency: 1_000_000,
            project_concurrency: 1_000_000,
            daily_jobs: 1_000_000_000,
            priority_boost: 0,
        };
        Self {
            bootstrapper: big,
            partner: TierLimits {
                priority_boost: 2,
                ..big
            },
            cto_scale: TierLimits {
                priority_boost: 5,
                ..big
            },
            queue_cap: 1_000_000,
            scheduled_cap: 1_000_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_limits_match_the_product_table() {
        let t = TierTable::default();
        let row = |l: TierLimits| {
            (
                l.user_concurrency,
                l.project_concurrency,
                l.daily_jobs,
                l.priority_boost,
            )
        };
        assert_eq!(row(t.limits(Tier::Bootstrapper)), (2, 2, 5, 0));
        assert_eq!(row(t.limits(Tier::Partner)), (3, 3, 50, 2));
        assert_eq!(row(t.limits(Tier::CtoScale)), (10, 5, 200, 5));
        assert_eq!(t.queue_cap, 100);
        assert_eq!(t.scheduled_cap, 20);
    }

    #[test]
    fn tier_spelling_round_trips() {
        for t in Tier::ALL {
            assert_eq!(Tier::try_from(t.as_str()), Ok(t));
        }
        assert!(Tier::try_from("enterprise").is_err());
    }
}
