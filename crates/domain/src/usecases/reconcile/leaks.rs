//! Step 5: no sandbox bills without a job that needs it.
//!
//! The provider is listed *before* the jobs are read, so a sandbox in the list was created before its job
//! was read: a build that has created its sandbox but not yet recorded it (a building job with no sandbox
//! id) is the one case left alone.

use super::{Pages, ReconcileError, Reconciler};
use crate::ports::{ProviderSandbox, SandboxError};
use crate::usecases::snapshot::{save_live, set_state};
use crate::{Job, JobStatus, SandboxState};

/// What the leak step killed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeakReport {
    /// Our sandboxes at the provider.
    pub listed: usize,
    pub killed: usize,
    /// Leaks the provider had already dropped by the time we killed them.
    pub already_gone: usize,
    /// Look-ups or kills that failed; logged, retried next run.
    pub errors: usize,
}

impl Reconciler {
    /// Kills provider sandboxes whose job is missing or failed, or whose job does not own them; then
    /// settles failed jobs whose record still shows a live sandbox.
    #[tracing::instrument(skip_all, err)]
    pub async fn kill_leaks(&self) -> Result<LeakReport, ReconcileError> {
        let d = &self.deps;
        let listed = d.runtime.list().await?;
        let mut report = LeakReport {
            listed: listed.len(),
            ..LeakReport::default()
        };
        for sandbox in listed {
            let job = match sandbox.job_id {
                Some(id) => d.repo.get_job(id).await,
                None => d.repo.find_job_by_sandbox(&sandbox.sandbox_id).await,
            };
            let job = match job {
                Ok(job) => job,
                Err(error) => {
                    report.errors += 1;
                    tracing::warn!(sandbox_id = %sandbox.sandbox_id, error = %error, "could not read its job");
                    continue;
                }
            };
            let Some(reason) = leak_reason(&sandbox, job.as_ref()) else {
                continue;
            };
            let job_id = job.as_ref().map(|j| j.id.to_string());
            match d.runtime.kill(&sandbox.sandbox_id).await {
                Ok(()) => {
                    report.killed += 1;
                    tracing::info!(
                        sandbox_id = %sandbox.sandbox_id,
                        job_id = ?job_id,
                        reason,
                        leak_killed = 1,
                        "leaked sandbox killed"
                    );
                }
                Err(SandboxError::NotFound(_)) => report.already_gone += 1,
                Err(error) => {
                    report.errors += 1;
                    tracing::warn!(sandbox_id = %sandbox.sandbox_id, error = %error, "could not kill a leaked sandbox");
                    continue;
                }
            }
            // A failed job that still records this sandbox as live now records it killed.
            if let Some(job) = job.filter(|j| {
                j.sandbox_id.as_ref() == Some(&sandbox.sandbox_id) && j.sandbox_state.is_live()
            }) {
                match set_state(d.repo.as_ref(), &job, SandboxState::Killed).await {
                    Ok(Some(written)) => save_live(d.live.as_ref(), &written).await,
                    Ok(None) => {}
                    Err(error) => {
                        report.errors += 1;
                        tracing::warn!(job_id = %job.id, error = %error, "could not record the kill");
                    }
                }
            }
        }
        self.kill_sandboxes_of_failed_jobs(&mut report).await?;
        Ok(report)
    }

    /// Failed jobs whose record still shows a live sandbox (one the provider list missed, or one killed
    /// above whose record could not be written): killed, and recorded killed (expired when the provider
    /// no longer had it).
    async fn kill_sandboxes_of_failed_jobs(
        &self,
        report: &mut LeakReport,
    ) -> Result<(), ReconcileError> {
        let mut pages = Pages::default();
        while let Some(jobs) = self.page_needing_attention(&mut pages).await? {
            self.kill_sandboxes_of(jobs, report).await;
        }
        Ok(())
    }

    async fn kill_sandboxes_of(&self, jobs: Vec<Job>, report: &mut LeakReport) {
        let d = &self.deps;
        for job in jobs {
            let Some(sandbox_id) = job.sandbox_id.clone() else {
                continue;
            };
            if job.status != JobStatus::Failed || !job.sandbox_state.is_live() {
                continue;
            }
            let state = match d.runtime.kill(&sandbox_id).await {
                Ok(()) => {
                    report.killed += 1;
                    tracing::info!(job_id = %job.id, %sandbox_id, leak_killed = 1, "failed job's sandbox killed");
                    SandboxState::Killed
                }
                Err(SandboxError::NotFound(_)) => {
                    report.already_gone += 1;
                    SandboxState::Expired
                }
                Err(error) => {
                    report.errors += 1;
                    tracing::warn!(job_id = %job.id, %sandbox_id, error = %error, "could not kill a failed job's sandbox");
                    continue;
                }
            };
            match set_state(d.repo.as_ref(), &job, state).await {
                Ok(Some(written)) => save_live(d.live.as_ref(), &written).await,
                Ok(None) => {}
                Err(error) => {
                    report.errors += 1;
                    tracing::warn!(job_id = %job.id, error = %error, "could not record the kill");
                }
            }
        }
    }
}

/// Why `sandbox` is a leak, or `None` when its job needs it.
fn leak_reason(sandbox: &ProviderSandbox, job: Option<&Job>) -> Option<&'static str> {
    let Some(job) = job else {
        return Some("no such job");
    };
    if job.sandbox_id.as_ref() != Some(&sandbox.sandbox_id) {
        // A build between creating its sandbox and recording it.
        if job.status.is_building() && job.sandbox_id.is_none() {
            return None;
        }
        return Some("not the job's sandbox");
    }
    if job.status == JobStatus::Failed {
        return Some("job failed");
    }
    if matches!(
        job.sandbox_state,
        SandboxState::Killed | SandboxState::Expired
    ) {
        return Some("recorded as gone");
    }
    None
}

#[cfg(test)]
#[path = "leaks_tests.rs"]
mod tests;
