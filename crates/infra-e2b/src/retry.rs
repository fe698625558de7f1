//! Retrying as E2B's SDKs do (`e2b/retry.py`): an answer marked `Should-Retry: true`, or without that
//! header a 429, 502, 503 or 504, is tried again after its `Retry-After` (delta-seconds) or else after a
//! jittered exponential backoff (0.1 s doubling up to 10 s, each wait drawn from half to all of it); a
//! connection that could not be made is tried again too. No retry starts whose wait would run past the
//! call's deadline, which bounds the whole call, every attempt included.

use std::future::Future;
use std::time::Duration;

use domain::ports::SandboxError;
use tokio::time::Instant;

use crate::error::Failure;

/// The statuses retried when the answer carries no `Should-Retry` header.
pub const RETRYABLE_STATUSES: [u16; 4] = [429, 502, 503, 504];
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// The shortest wait as a share of the backoff.
const JITTER_MIN: f64 = 0.5;
/// The longest `Retry-After` taken as such (the SDK's bound); a longer one is ignored.
const MAX_RETRY_AFTER_SECS: u64 = 2_147_483_647;

/// When a failed attempt may be tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    Never,
    /// After the backoff.
    Backoff,
    /// After what the provider asked for (`Retry-After`).
    After(Duration),
}

/// Whether an answer may be retried: the `Should-Retry` header decides when present (anything but
/// `true` is no), the status otherwise.
pub fn is_retryable(status: u16, should_retry: Option<&str>) -> bool {
    match should_retry {
        Some(value) => value.trim().eq_ignore_ascii_case("true"),
        None => RETRYABLE_STATUSES.contains(&status),
    }
}

/// `Retry-After` as delta-seconds; an HTTP date or anything else is ignored, as the SDK does.
pub fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    let value = value?.trim();
    if value.is_empty() || value.len() > 10 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: u64 = value.parse().ok()?;
    (secs <= MAX_RETRY_AFTER_SECS).then(|| Duration::from_secs(secs))
}

/// How a failed answer is retried, from its status and headers.
pub fn retry_of(status: u16, should_retry: Option<&str>, retry_after: Option<&str>) -> Retry {
    if !is_retryable(status, should_retry) {
        return Retry::Never;
    }
    parse_retry_after(retry_after).map_or(Retry::Backoff, Retry::After)
}

/// The wait before retry number `attempt + 1`, for a uniform draw `random` in `[0, 1)`.
pub fn backoff(attempt: u32, random: f64) -> Duration {
    let full = BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(BACKOFF_MAX);
    full.mul_f64(JITTER_MIN + random.clamp(0.0, 1.0) * (1.0 - JITTER_MIN))
}

/// How hard to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    /// The most retries after the first attempt (a bound for a provider answering "retry now").
    pub max_retries: u32,
    /// The whole call, every attempt and wait included.
    pub deadline: Duration,
}

impl RetryPolicy {
    /// The control plane's calls: a minute each, as the SDK's request timeout.
    pub const CONTROL: Self = Self {
        max_retries: 16,
        deadline: Duration::from_secs(60),
    };

    pub fn with_deadline(self, deadline: Duration) -> Self {
        Self { deadline, ..self }
    }

    /// Runs `attempt` (given the time left for it) until it succeeds, fails for good, or the retries or
    /// the deadline run out.
    pub async fn run<T, F, Fut>(&self, op: &'static str, mut attempt: F) -> Result<T, SandboxError>
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let deadline = Instant::now() + self.deadline;
        let mut retries = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let failure = match attempt(left).await {
                Ok(value) => return Ok(value),
                Err(failure) => failure,
            };
            let wait = match failure.retry {
                Retry::Never => return Err(failure.error),
                Retry::Backoff => backoff(retries, rand::random::<f64>()),
                Retry::After(wait) => wait,
            };
            if retries >= self.max_retries || Instant::now() + wait >= deadline {
                return Err(failure.error);
            }
            retries += 1;
            tracing::warn!(op, retries, wait_ms = wait.as_millis() as u64, error = %failure.error, "transient e2b failure, retrying");
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn unavailable(retry: Retry) -> Failure {
        Failure {
            error: SandboxError::Unavailable("busy".into()),
            retry,
        }
    }

    #[test]
    fn which_answers_are_retried() {
        for status in [429, 502, 503, 504] {
            assert!(is_retryable(status, None), "{status}");
        }
        for status in [400, 401, 404, 409, 500, 501] {
            assert!(!is_retryable(status, None), "{status}");
        }
        // The header decides when present, either way.
        assert!(is_retryable(500, Some("true")));
        assert!(is_retryable(409, Some(" TRUE ")));
        assert!(!is_retryable(503, Some("false")));
        assert!(!is_retryable(429, Some("no")));
    }

    #[test]
    fn retry_after_is_delta_seconds_only() {
        assert_eq!(parse_retry_after(Some("3")), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(Some(" 0 ")), Some(Duration::ZERO));
        for bad in [
            "",
            "-1",
            "1.5",
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "99999999999",
            "٣",
        ] {
            assert_eq!(parse_retry_after(Some(bad)), None, "{bad:?}");
        }
        assert_eq!(parse_retry_after(None), None);
        assert_eq!(
            retry_of(429, None, Some("2")),
            Retry::After(Duration::from_secs(2))
        );
        assert_eq!(retry_of(503, None, None), Retry::Backoff);
        assert_eq!(retry_of(400, None, Some("2")), Retry::Never);
    }

    #[test]
    fn backoff_doubles_from_a_tenth_to_ten_seconds_with_jitter() {
        assert_eq!(backoff(0, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(0, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(3, 1.0), Duration::from_millis(800));
        assert_eq!(backoff(7, 1.0), Duration::from_secs(10));
        assert_eq!(backoff(40, 0.0), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_success() {
        let calls = AtomicU32::new(0);
        let result = RetryPolicy::CONTROL
            .run("test", |_| async {
                if calls.fetch_add(1, Ordering::SeqCst) < 5 {
                    Err(unavailable(Retry::Backoff))
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(result, Ok(7));
        assert_eq!(calls.load(Ordering::SeqCst), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_failure_is_not_retried() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = RetryPolicy::CONTROL
            .run("test", |_| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Failure::fatal(SandboxError::NotFound("x".into())))
            })
            .await;
        assert_eq!(result, Err(SandboxError::NotFound("x".into())));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured() {
        let start = Instant::now();
        let calls = AtomicU32::new(0);
        let result = RetryPolicy::CONTROL
            .run("test", |_| async {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(unavailable(Retry::After(Duration::from_secs(7))))
                } else {
                    Ok(())
                }
            })
            .await;
        assert_eq!(result, Ok(()));
        assert_eq!(start.elapsed(), Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn no_retry_waits_past_the_deadline() {
        // A Retry-After longer than the time left fails the call at once.
        let start = Instant::now();
        let calls = AtomicU32::new(0);
        let policy = RetryPolicy::CONTROL.with_deadline(Duration::from_secs(10));
        let result: Result<(), _> = policy
            .run("test", |_| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(unavailable(Retry::After(Duration::from_secs(30))))
            })
            .await;
        assert_eq!(result, Err(SandboxError::Unavailable("busy".into())));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(start.elapsed(), Duration::ZERO);

        // Backoffs stop before the deadline, and each attempt is told the time it has left.
        let start = Instant::now();
        let lefts = std::sync::Mutex::new(Vec::new());
        let result: Result<(), _> = policy
            .run("test", |left| {
                lefts.lock().unwrap().push(left);
                async { Err(unavailable(Retry::Backoff)) }
            })
            .await;
        assert!(result.is_err());
        assert!(start.elapsed() < Duration::from_secs(10));
        let lefts = lefts.into_inner().unwrap();
        assert_eq!(lefts[0], Duration::from_secs(10));
        assert!(lefts.windows(2).all(|w| w[1] < w[0]), "{lefts:?}");
        assert!(lefts.len() > 4, "{lefts:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_bounded_even_when_the_provider_says_now() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = RetryPolicy::CONTROL
            .run("test", |_| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(unavailable(Retry::After(Duration::ZERO)))
            })
            .await;
        assert!(result.is_err());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            RetryPolicy::CONTROL.max_retries + 1
        );
    }
}
