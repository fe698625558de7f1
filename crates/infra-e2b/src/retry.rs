//! Retrying transient failures with exponential backoff, within a bounded number of tries and a deadline.

use std::future::Future;
use std::time::Duration;

use domain::ports::SandboxError;
use tokio::time::Instant;

use crate::error::Failure;

/// How hard to try before giving up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    pub tries: u32,
    /// No new try starts after this much time since the first.
    pub deadline: Duration,
    pub first_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            tries: 3,
            deadline: Duration::from_secs(10),
            first_delay: Duration::from_millis(200),
        }
    }
}

impl RetryPolicy {
    /// Runs `attempt` until it succeeds, fails for good, or the tries or the deadline run out.
    pub async fn run<T, F, Fut>(&self, op: &'static str, mut attempt: F) -> Result<T, SandboxError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let start = Instant::now();
        let mut delay = self.first_delay;
        let mut tries = 0;
        loop {
            tries += 1;
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(failure) => {
                    let out_of_time = start.elapsed() + delay > self.deadline;
                    if !failure.retryable || tries >= self.tries || out_of_time {
                        return Err(failure.error);
                    }
                    tracing::warn!(op, tries, error = %failure.error, "transient e2b failure, retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn transient() -> Failure {
        Failure {
            error: SandboxError::Unavailable("busy".into()),
            retryable: true,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_failures_up_to_the_limit() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = RetryPolicy::default()
            .run("test", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(transient())
            })
            .await;
        assert_eq!(result, Err(SandboxError::Unavailable("busy".into())));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_the_first_permanent_failure_and_returns_success() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = RetryPolicy::default()
            .run("test", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Failure::fatal(SandboxError::NotFound("x".into())))
            })
            .await;
        assert_eq!(result, Err(SandboxError::NotFound("x".into())));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = AtomicU32::new(0);
        let result = RetryPolicy::default()
            .run("test", || async {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(transient())
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(result, Ok(7));
    }
}
