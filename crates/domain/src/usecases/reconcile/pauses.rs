//! Steps 6 and 7: retry failed pauses with backoff, and pause resumed sandboxes that went idle.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::{Pages, PauseBackoff, ReconcileError, Reconciler};
use crate::ports::{ProviderState, RepoError, SandboxError};
use crate::usecases::pipeline::{pause_job_sandbox, PauseDeps, PauseResult};
use crate::usecases::snapshot::{save_live, set_state};
use crate::{Job, JobStatus, PausePolicy, SandboxState};

/// What a pause step did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PauseReport {
    /// Sandboxes due for a pause.
    pub due: usize,
    pub paused: usize,
    /// Pauses the provider refused this round.
    pub failed: usize,
    /// Sandboxes newly marked `pause_failed` after `max_pause_attempts` failures in a row (alert on it;
    /// retries go on at `pause_backoff_max`).
    pub gave_up: usize,
    /// Sandboxes the provider no longer had (now `expired`).
    pub expired: usize,
    /// Due, but still backing off after an earlier failure.
    pub backing_off: usize,
    /// Per-job errors (the repository failed); logged.
    pub errors: usize,
}

impl Reconciler {
    /// Retries the pause of READY sandboxes whose post-READY pause failed: state `pause_failed`, or
    /// `running`, never resumed, under the `immediate` policy and past `pause_grace`; and `pausing` records
    /// older than `pausing_stale_after`, whose pauser was lost (the provider is asked what became of the
    /// pause first). Preview activity does not defer it (status polls count as activity; only a resumed
    /// sandbox is kept awake by it, in [`Self::repause_idle`]). Failures back off exponentially on the
    /// `now` clock; after `max_pause_attempts` in a row the state becomes `pause_failed`.
    #[tracing::instrument(skip_all, err)]
    pub async fn retry_failed_pauses(
        &self,
        now: DateTime<Utc>,
    ) -> Result<PauseReport, ReconcileError> {
        self.pause_where(now, |job| {
            self.is_failed_pause(job, now) || self.is_stale_pausing(job, now)
        })
        .await
    }

    /// Pauses running READY sandboxes idle past their limit: `idle_pause_after` since the later of
    /// resumed_at and last_activity_at for a resumed sandbox; the `idle:<secs>` policy's limit for one never
    /// paused since its build.
    #[tracing::instrument(skip_all, err)]
    pub async fn repause_idle(&self, now: DateTime<Utc>) -> Result<PauseReport, ReconcileError> {
        self.pause_where(now, |job| self.is_idle(job, now)).await
    }

    /// Pages through every READY (and failed) job with a live, unpaused sandbox and pauses those `due`
    /// selects; forgets the backoff of jobs no longer among them.
    async fn pause_where(
        &self,
        now: DateTime<Utc>,
        due: impl Fn(&Job) -> bool,
    ) -> Result<PauseReport, ReconcileError> {
        let mut report = PauseReport::default();
        let mut seen = HashSet::new();
        let mut pages = Pages::default();
        while let Some(page) = self.page_needing_attention(&mut pages).await? {
            seen.extend(page.iter().map(|j| j.id));
            let page: Vec<Job> = page.into_iter().filter(|j| due(j)).collect();
            self.pause_all(page, now, &mut report).await;
        }
        self.backoff_map().retain(|id, _| seen.contains(id));
        Ok(report)
    }

    /// A `pausing` record nobody is finishing: its pauser died, or could not record the outcome.
    fn is_stale_pausing(&self, job: &Job, now: DateTime<Utc>) -> bool {
        job.status == JobStatus::Ready
            && job.sandbox_id.is_some()
            && job.sandbox_state == SandboxState::Pausing
            && elapsed(job.updated_at, now) >= self.config.pausing_stale_after
    }

    fn is_failed_pause(&self, job: &Job, now: DateTime<Utc>) -> bool {
        if job.status != JobStatus::Ready || job.sandbox_id.is_none() {
            return false;
        }
        match job.sandbox_state {
            SandboxState::PauseFailed => true,
            SandboxState::Running => {
                let ready_at = job.completed_at.unwrap_or(job.updated_at);
                // Activity is deliberately ignored: the front end's status polls count as activity, so
                // waiting for a quiet spell would leave a failed pause billing for as long as the page
                // stays open. Only a resumed sandbox (resumed_at set) is protected by activity, and that
                // one belongs to `repause_idle`.
                job.resumed_at.is_none()
                    && self.config.pause_policy == PausePolicy::Immediate
                    && elapsed(ready_at, now) >= self.config.pause_grace
            }
            _ => false,
        }
    }

    fn is_idle(&self, job: &Job, now: DateTime<Utc>) -> bool {
        if job.status != JobStatus::Ready
            || job.sandbox_id.is_none()
            || job.sandbox_state != SandboxState::Running
        {
            return false;
        }
        let (since, limit) = match (job.resumed_at, self.config.pause_policy) {
            (Some(resumed), _) => (resumed, self.config.idle_pause_after),
            (None, PausePolicy::Idle(limit)) => (job.completed_at.unwrap_or(job.updated_at), limit),
            (None, _) => return false,
        };
        let since = job.last_activity_at.map_or(since, |a| a.max(since));
        elapsed(since, now) >= limit
    }

    /// Pauses each due job unless it is backing off at `now` (the same clock as every other time rule).
    async fn pause_all(&self, due: Vec<Job>, now: DateTime<Utc>, report: &mut PauseReport) {
        report.due += due.len();
        for job in due {
            let failures = match self.backoff_map().get(&job.id) {
                Some(b) if b.next_retry_at > now => {
                    report.backing_off += 1;
                    continue;
                }
                Some(b) => b.failures,
                None => 0,
            };
            let d = &self.deps;
            let deps = PauseDeps {
                repo: d.repo.as_ref(),
                live: d.live.as_ref(),
                runtime: d.runtime.as_ref(),
            };
            let started = Instant::now();
            let result = if job.sandbox_state == SandboxState::Pausing {
                settle_pausing(deps, &job).await
            } else {
                pause_job_sandbox(deps, &job).await
            };
            let pause_latency_ms = started.elapsed().as_millis() as u64;
            match result {
                PauseResult::Paused(_) => {
                    report.paused += 1;
                    self.backoff_map().remove(&job.id);
                    tracing::info!(job_id = %job.id, pause_latency_ms, "reconciler paused the sandbox");
                }
                PauseResult::Failed(SandboxError::NotFound(_)) => {
                    report.expired += 1;
                    self.backoff_map().remove(&job.id);
                }
                PauseResult::Failed(error) => {
                    report.failed += 1;
                    let failures = failures + 1;
                    let delay = self.backoff_delay(failures);
                    self.backoff_map().insert(
                        job.id,
                        PauseBackoff {
                            failures,
                            next_retry_at: after(now, delay),
                        },
                    );
                    tracing::warn!(
                        job_id = %job.id,
                        failures,
                        pause_latency_ms,
                        retry_in_ms = delay.as_millis() as u64,
                        error = %error,
                        "pause failed; will retry"
                    );
                    if failures >= self.config.max_pause_attempts {
                        match self.mark_pause_failed(&job).await {
                            Ok(true) if job.sandbox_state != SandboxState::PauseFailed => {
                                report.gave_up += 1;
                                tracing::error!(
                                    job_id = %job.id,
                                    sandbox_id = ?job.sandbox_id,
                                    failures,
                                    pause_gave_up = 1,
                                    "sandbox could not be paused; marked pause_failed"
                                );
                            }
                            Ok(_) => {}
                            Err(error) => {
                                report.errors += 1;
                                tracing::warn!(job_id = %job.id, error = %error, "could not mark pause_failed");
                            }
                        }
                    }
                }
                PauseResult::Skipped => {}
                PauseResult::Unrecorded(error) => {
                    report.errors += 1;
                    tracing::warn!(job_id = %job.id, error = %error, "could not record a pause");
                }
            }
        }
    }

    /// After a failed pause put the state back to running: records `pause_failed` instead. `true` when
    /// written.
    async fn mark_pause_failed(&self, job: &Job) -> Result<bool, RepoError> {
        let d = &self.deps;
        let Some(now) = d.repo.get_job(job.id).await? else {
            return Ok(false);
        };
        if now.sandbox_state != SandboxState::Running {
            return Ok(false);
        }
        match set_state(d.repo.as_ref(), &now, SandboxState::PauseFailed).await? {
            Some(written) => {
                save_live(d.live.as_ref(), &written).await;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// `base · 2^(failures-1)`, at most `pause_backoff_max`.
    fn backoff_delay(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1));
        self.config
            .pause_backoff_base
            .saturating_mul(factor)
            .min(self.config.pause_backoff_max)
    }

    fn backoff_map(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<crate::JobId, PauseBackoff>> {
        // Poisoning only follows a panic elsewhere; the map is still usable.
        self.backoff.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A `pausing` record whose pause outcome is unknown: the provider says what became of it. Paused: recorded
/// paused (the provider's word is the confirmation). Running: paused now. Gone: recorded expired.
async fn settle_pausing(deps: PauseDeps<'_>, job: &Job) -> PauseResult {
    let Some(sandbox) = job.sandbox_id.as_ref() else {
        return PauseResult::Skipped;
    };
    match deps.runtime.state(sandbox).await {
        Ok(ProviderState::Paused) => match set_state(deps.repo, job, SandboxState::Paused).await {
            Ok(Some(paused)) => {
                save_live(deps.live, &paused).await;
                PauseResult::Paused(Box::new(paused))
            }
            Ok(None) => PauseResult::Skipped,
            Err(error) => PauseResult::Unrecorded(error),
        },
        Ok(ProviderState::Running) => pause_job_sandbox(deps, job).await,
        Err(error) => {
            if matches!(error, SandboxError::NotFound(_)) {
                match set_state(deps.repo, job, SandboxState::Expired).await {
                    Ok(Some(gone)) => save_live(deps.live, &gone).await,
                    Ok(None) => {}
                    Err(error) => return PauseResult::Unrecorded(error),
                }
            }
            PauseResult::Failed(error)
        }
    }
}

/// `now + delay`, saturating (the backoff is capped far below chrono's range anyway).
fn after(now: DateTime<Utc>, delay: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(delay)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Time from `since` to `now` (zero when `since` is in the future, e.g. clock skew).
pub(super) fn elapsed(since: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (now - since).to_std().unwrap_or(Duration::ZERO)
}

#[cfg(test)]
#[path = "pauses_tests.rs"]
mod tests;
