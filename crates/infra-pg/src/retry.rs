//! The bound on retrying a statement whose failure passes ([`crate::error::map_err`]'s `Unavailable`): a
//! connection closed or terminated under it, a serialization failure, a deadlock. The first retry comes
//! at once on a fresh connection (the usual case: one kept connection was killed), later ones after a
//! doubling pause, until [`RETRY_FOR`] has passed since the first failure.

use std::time::Duration;

use tokio::time::Instant;

/// How long a statement is retried for after its first failure.
pub(crate) const RETRY_FOR: Duration = Duration::from_secs(5);
const FIRST_PAUSE: Duration = Duration::from_millis(25);
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// One statement's retries.
#[derive(Debug)]
pub(crate) struct Retry {
    failures: u32,
    /// Set at the first failure.
    until: Option<Instant>,
}

impl Retry {
    pub(crate) fn new() -> Self {
        Self {
            failures: 0,
            until: None,
        }
    }

    /// Whether the statement has failed before (so a write it made may have applied unseen).
    pub(crate) fn retried(&self) -> bool {
        self.failures > 0
    }

    /// After a failure: the pause before the next try, or `None` when the bound is spent.
    pub(crate) fn after_failure(&mut self) -> Option<Duration> {
        self.after_failure_at(Instant::now())
    }

    fn after_failure_at(&mut self, now: Instant) -> Option<Duration> {
        let until = *self.until.get_or_insert(now + RETRY_FOR);
        self.failures += 1;
        if now >= until {
            return None;
        }
        let pause = match self.failures {
            1 => Duration::ZERO,
            n => FIRST_PAUSE
                .saturating_mul(2u32.saturating_pow(n - 2))
                .min(MAX_PAUSE),
        };
        Some(pause.min(until - now))
    }

    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_at_once_then_back_off_until_the_bound() {
        let mut retry = Retry::new();
        assert!(!retry.retried());
        let mut pauses = Vec::new();
        let mut now = Instant::now();
        while let Some(pause) = retry.after_failure_at(now) {
            pauses.push(pause);
            // Each try itself takes a millisecond.
            now += pause + Duration::from_millis(1);
        }
        assert!(retry.retried());
        assert_eq!(
            pauses[..4],
            [
                Duration::ZERO,
                Duration::from_millis(25),
                Duration::from_millis(50),
                Duration::from_millis(100)
            ]
        );
        assert!(pauses.iter().all(|p| *p <= MAX_PAUSE));
        let total: Duration = pauses.iter().sum();
        assert!(total <= RETRY_FOR, "{total:?}");
        assert!(total >= RETRY_FOR - MAX_PAUSE, "{total:?}");
    }
}
