//! Step 4: sandbox states follow the provider's truth.
//!
//! Postgres is read *before* the provider (each page of jobs before the list it is compared with), and every correction is a compare-and-set on the version read:
//! one of our own operations in flight (a resume claims `resuming`, a pause claims `pausing`, each bumping
//! the version before it calls the provider) makes the correction lose instead of undoing that operation.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::pauses::elapsed;
use super::{Pages, ReconcileError, Reconciler};
use crate::ports::{ProviderState, SandboxError};
use crate::usecases::snapshot::{save_live, set_state};
use crate::{Job, JobStatus, SandboxId, SandboxState};

/// What the drift step corrected, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriftReport {
    /// READY jobs with a live sandbox compared with the provider.
    pub checked: usize,
    /// We said running; the provider has it paused.
    pub to_paused: usize,
    /// We said paused; the provider has it running.
    pub to_running: usize,
    /// The provider no longer has it.
    pub to_expired: usize,
    /// A `pausing`/`resuming` left behind by a crash, set to the provider's state.
    pub stale_settled: usize,
    /// Provider look-ups or writes that failed; logged.
    pub errors: usize,
}

impl Reconciler {
    /// Compares READY jobs' live sandboxes with the provider's list and corrects our record to it, page by
    /// page through every READY job, each page read before the list it is compared with.
    #[tracing::instrument(skip_all, err)]
    pub async fn correct_drift(&self, now: DateTime<Utc>) -> Result<DriftReport, ReconcileError> {
        let mut report = DriftReport::default();
        let mut pages = Pages::default();
        while let Some(page) = self.page_by_status(JobStatus::Ready, &mut pages).await? {
            let jobs: Vec<Job> = page
                .into_iter()
                .filter(|j| j.sandbox_id.is_some() && j.sandbox_state.is_live())
                .collect();
            if jobs.is_empty() {
                continue;
            }
            let provider: HashMap<_, _> = self
                .deps
                .runtime
                .list()
                .await?
                .into_iter()
                .map(|s| (s.sandbox_id, s.state))
                .collect();
            report.checked += jobs.len();
            for job in jobs {
                self.check_drift(job, &provider, now, &mut report).await;
            }
        }
        Ok(report)
    }

    /// Corrects one job's sandbox state to the provider's, when they disagree.
    async fn check_drift(
        &self,
        job: Job,
        provider: &HashMap<SandboxId, ProviderState>,
        now: DateTime<Utc>,
        report: &mut DriftReport,
    ) {
        let d = &self.deps;
        let Some(sandbox_id) = job.sandbox_id.clone() else {
            return;
        };
        // Absent from the list: ask about this one sandbox before calling it gone (a list can lag, or
        // miss a sandbox whose metadata was lost).
        let there = match provider.get(&sandbox_id) {
            Some(state) => Some(*state),
            None => match d.runtime.state(&sandbox_id).await {
                Ok(state) => Some(state),
                Err(SandboxError::NotFound(_)) => None,
                Err(error) => {
                    report.errors += 1;
                    tracing::warn!(job_id = %job.id, %sandbox_id, error = %error, "could not ask the provider");
                    return;
                }
            },
        };
        let stale = elapsed(job.updated_at, now) >= self.config.stale_transition_after;
        let Some((target, kind)) = correction(job.sandbox_state, there, stale) else {
            return;
        };
        match set_state(d.repo.as_ref(), &job, target).await {
            Ok(Some(written)) => {
                save_live(d.live.as_ref(), &written).await;
                match kind {
                    Kind::ToPaused => report.to_paused += 1,
                    Kind::ToRunning => report.to_running += 1,
                    Kind::ToExpired => report.to_expired += 1,
                    Kind::Stale => report.stale_settled += 1,
                }
                tracing::info!(
                    job_id = %job.id,
                    %sandbox_id,
                    from = %job.sandbox_state,
                    to = %target,
                    drift_corrected = kind.as_str(),
                    "sandbox state corrected to the provider's"
                );
            }
            // One of our operations moved it meanwhile; the next run looks again.
            Ok(None) => {}
            Err(error) => {
                report.errors += 1;
                tracing::warn!(job_id = %job.id, error = %error, "could not correct the sandbox state");
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ToPaused,
    ToRunning,
    ToExpired,
    Stale,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::ToPaused => "to_paused",
            Kind::ToRunning => "to_running",
            Kind::ToExpired => "to_expired",
            Kind::Stale => "stale_transition",
        }
    }
}

/// The correction our state needs given the provider's (`None`: it no longer has the sandbox).
fn correction(
    ours: SandboxState,
    there: Option<ProviderState>,
    stale: bool,
) -> Option<(SandboxState, Kind)> {
    use SandboxState::{PauseFailed, Paused, Pausing, Resuming, Running};
    let Some(there) = there else {
        return Some((SandboxState::Expired, Kind::ToExpired));
    };
    let truth = match there {
        ProviderState::Running => Running,
        ProviderState::Paused => Paused,
    };
    match (ours, truth) {
        (Running | PauseFailed, Paused) => Some((Paused, Kind::ToPaused)),
        (Paused, Running) => Some((Running, Kind::ToRunning)),
        (Pausing | Resuming, _) if stale => Some((truth, Kind::Stale)),
        _ => Option::None,
    }
}

#[cfg(test)]
#[path = "drift_tests.rs"]
mod tests;
