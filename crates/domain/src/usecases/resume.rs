//! Resume (`POST /api/generation/{job_id}/resume`): bring a READY job's paused sandbox back and answer its
//! preview URL.
//!
//! - **Single flight.** Concurrent calls for one job in this process share one resume and its result (a
//!   shared, spawned future, so a caller that goes away does not abandon the state half-way). Across
//!   processes the sandbox state's compare-and-set `paused → resuming` elects one resumer; the others poll
//!   the row until it is running and answer its preview.
//! - **Cheap.** `connect` resumes the sandbox and keeps its processes (memory is kept, so the dev server is
//!   usually still there). The dev server is restarted only when the preview does not answer, and
//!   dependencies are reinstalled only when `node_modules` is missing (fault 19 of the Python version).
//! - **Bounded.** One retry after `retry_backoff`, all within `deadline`. The provider's typed not-found is
//!   [`ResumeError::Expired`] (state `expired`); anything else is [`ResumeError::Unreachable`], and the
//!   state is set to what the provider says the sandbox now is (a sandbox left running without a working
//!   preview is paused again first, so it stops billing and the next resume starts from scratch).
//! - Postgres is written first (`resuming → running` with the preview URL), then Redis, then the answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::time::Instant;
use tracing::Instrument;

use crate::ports::{
    JobRepository, LiveJobStore, PreviewProbe, ProviderState, RepoError, SandboxError,
    SandboxRuntime, SandboxStateUpdate,
};
use crate::usecases::pipeline::PackageJsonParser;
use crate::usecases::snapshot::{save_live, set_state};

use crate::{Job, JobId, JobStatus, SandboxId, SandboxState, UserId};
use attempt::{AttemptError, Attempted};

/// The message of a 503 with `error_type` `sandbox_expired`.
pub const EXPIRED_MESSAGE: &str = "Sandbox has expired and cannot be resumed. Please rebuild.";
/// The message of a 503 with `error_type` `sandbox_unreachable`.
pub const UNREACHABLE_MESSAGE: &str = "Sandbox is unreachable. Please try again or rebuild.";

/// What resume needs.
#[derive(Clone)]
pub struct ResumeDeps {
    pub repo: Arc<dyn JobRepository>,
    pub live: Arc<dyn LiveJobStore>,
    pub runtime: Arc<dyn SandboxRuntime>,
    pub probe: Arc<dyn PreviewProbe>,
    pub package_json: Arc<dyn PackageJsonParser>,
}

/// Resume's time budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeConfig {
    /// The whole resume, both attempts included (a final state write may follow it by `settle_timeout`).
    pub deadline: Duration,
    /// The pause between the first attempt and the retry.
    pub retry_backoff: Duration,
    /// The provider timeout set on connect and again once the preview answers: the backstop after which
    /// the provider pauses (auto-pause) or stops the sandbox if our idle re-pause never comes.
    pub provider_timeout: Duration,
    /// How long a restarted dev server has to answer.
    pub readiness_deadline: Duration,
    /// How long the preview of a just-resumed sandbox has to answer before the dev server is restarted.
    pub preview_check_deadline: Duration,
    pub probe_interval: Duration,
    /// The deadline of `npm install` when node_modules is missing.
    pub install_timeout: Duration,
    /// How often the row is read while another process resumes (or pauses) the sandbox.
    pub poll_interval: Duration,
    /// The bound on asking the provider for the sandbox's state after a failure.
    pub settle_timeout: Duration,
    /// How long a caller waits for the resume: past it, the call answers `Unreachable` while the resume
    /// goes on, and the next call joins it. Under the front end's 30 s proxy, which would drop the answer.
    pub answer_within: Duration,
}

impl Default for ResumeConfig {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(60),
            retry_backoff: Duration::from_secs(2),
            provider_timeout: Duration::from_secs(30 * 60),
            readiness_deadline: Duration::from_secs(30),
            preview_check_deadline: Duration::from_secs(3),
            probe_interval: Duration::from_millis(500),
            install_timeout: Duration::from_secs(45),
            poll_interval: Duration::from_millis(250),
            settle_timeout: Duration::from_secs(5),
            answer_within: Duration::from_secs(25),
        }
    }
}

/// The answer of a successful resume: `{preview_url, sandbox_id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resumed {
    pub preview_url: String,
    pub sandbox_id: SandboxId,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResumeError {
    /// The job does not exist or belongs to someone else (404 `Job not found`).
    #[error("job not found")]
    NotFound,
    /// The job has no sandbox (404).
    #[error("job has no sandbox")]
    NoSandbox,
    /// The job is not READY (409).
    #[error("job is not ready ({0})")]
    NotReady(JobStatus),
    /// The provider no longer has the sandbox; its state is now expired (503 `sandbox_expired`).
    #[error("sandbox expired: {reason}")]
    Expired { reason: String },
    /// The resume failed or ran out of time (503 `sandbox_unreachable`).
    #[error("sandbox unreachable: {reason}")]
    Unreachable { reason: String },
    #[error("job repository failed")]
    Repo(#[source] RepoError),
}

impl ResumeError {
    /// The `detail.error_type` of the 503 answers.
    pub fn error_type(&self) -> Option<&'static str> {
        match self {
            ResumeError::Expired { .. } => Some("sandbox_expired"),
            ResumeError::Unreachable { .. } => Some("sandbox_unreachable"),
            _ => None,
        }
    }

    /// The `detail.message` of the 503 answers (the reason goes to the log, not to the user).
    pub fn user_message(&self) -> Option<&'static str> {
        match self {
            ResumeError::Expired { .. } => Some(EXPIRED_MESSAGE),
            ResumeError::Unreachable { .. } => Some(UNREACHABLE_MESSAGE),
            _ => None,
        }
    }
}

/// A resume in flight: every clone resolves to its one result.
pub type Flight = Shared<BoxFuture<'static, Result<Resumed, ResumeError>>>;

/// What [`ResumeService::wake`] found.
pub enum Waking {
    /// The sandbox is running: its preview.
    Running(Resumed),
    /// A resume is in flight; `started` when this call started it (count a wake once).
    Flight { flight: Flight, started: bool },
}

/// Resumes sandboxes; one per process, shared by every request (cheap to clone).
#[derive(Clone)]
pub struct ResumeService {
    inner: Arc<Inner>,
    flights: Arc<Mutex<HashMap<JobId, Flight>>>,
}

struct Inner {
    deps: ResumeDeps,
    config: ResumeConfig,
}

impl ResumeService {
    pub fn new(deps: ResumeDeps, config: ResumeConfig) -> Self {
        Self {
            inner: Arc::new(Inner { deps, config }),
            flights: Arc::default(),
        }
    }

    /// Resumes `job_id`'s sandbox for `user` and answers its preview URL. A running sandbox answers at once
    /// (and counts as activity). Concurrent calls for one job share one resume.
    #[tracing::instrument(
        skip_all,
        fields(job_id = %job_id, user_id = %user, sandbox_id = tracing::field::Empty),
        err
    )]
    pub async fn resume(&self, user: &UserId, job_id: JobId) -> Result<Resumed, ResumeError> {
        let job = self
            .inner
            .deps
            .repo
            .get_job_for_user(job_id, user)
            .await
            .map_err(ResumeError::Repo)?
            .ok_or(ResumeError::NotFound)?;
        self.resume_job(job, self.inner.config.answer_within).await
    }

    /// Wakes `job_id`'s sandbox for the preview gateway, which has no user: the preview host itself is
    /// the credential (its label, and the signed cookie in `signed` mode). The same single flight as
    /// [`Self::resume`]; the caller decides how long to wait for it (the resume goes on regardless).
    #[tracing::instrument(
        skip_all,
        fields(job_id = %job_id, sandbox_id = tracing::field::Empty),
        err
    )]
    pub async fn wake(&self, job_id: JobId) -> Result<Waking, ResumeError> {
        let job = self
            .inner
            .deps
            .repo
            .get_job(job_id)
            .await
            .map_err(ResumeError::Repo)?
            .ok_or(ResumeError::NotFound)?;
        self.check_resumable(&job)?;
        if job.sandbox_state == SandboxState::Running {
            return self.inner.answer_running(&job).await.map(Waking::Running);
        }
        let (flight, started) = self.flight(job);
        Ok(Waking::Flight { flight, started })
    }

    fn check_resumable(&self, job: &Job) -> Result<(), ResumeError> {
        let Some(sandbox_id) = job.sandbox_id.as_ref() else {
            return Err(ResumeError::NoSandbox);
        };
        tracing::Span::current().record("sandbox_id", tracing::field::display(sandbox_id));
        if job.status != JobStatus::Ready {
            return Err(ResumeError::NotReady(job.status));
        }
        Ok(())
    }

    async fn resume_job(&self, job: Job, within: Duration) -> Result<Resumed, ResumeError> {
        self.check_resumable(&job)?;
        if job.sandbox_state == SandboxState::Running {
            return self.inner.answer_running(&job).await;
        }
        match tokio::time::timeout(within, self.flight(job).0).await {
            Ok(result) => result,
            Err(_) => {
                tracing::info!(
                    answer_within_ms = within.as_millis() as u64,
                    "resume still in flight; answering unreachable while it goes on"
                );
                Err(ResumeError::Unreachable {
                    reason: format!("the resume did not finish within {within:?}; it goes on"),
                })
            }
        }
    }

    /// Joins the job's resume in flight, or starts one (then `true`).
    fn flight(&self, job: Job) -> (Flight, bool) {
        // Lock poisoning only follows a panic elsewhere; the map itself is still consistent.
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(flight) = flights.get(&job.id) {
            tracing::info!("joining the resume in flight");
            return (flight.clone(), false);
        }
        let id = job.id;
        let inner = Arc::clone(&self.inner);
        let registry = Arc::clone(&self.flights);
        let span = tracing::Span::current();
        // Spawned, so that the state machine finishes even when every caller has gone away.
        let task = tokio::spawn(
            async move {
                let started = Instant::now();
                let result = inner.drive(job).await;
                let resume_latency_ms = started.elapsed().as_millis() as u64;
                let outcome = match &result {
                    Ok(_) => "resumed",
                    Err(e) => e.error_type().unwrap_or("error"),
                };
                tracing::info!(resume_latency_ms, outcome, "resume finished");
                // Only this flight's own task removes its entry, so a newer flight is never removed.
                registry
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                result
            }
            .instrument(span),
        );
        let flight = async move {
            task.await.unwrap_or_else(|e| {
                Err(ResumeError::Unreachable {
                    reason: format!("resume task failed: {e}"),
                })
            })
        }
        .boxed()
        .shared();
        flights.insert(id, flight.clone());
        (flight, true)
    }
}

impl Inner {
    /// Follows the row until we own the resume, someone else finished it, or the deadline passes.
    async fn drive(&self, mut job: Job) -> Result<Resumed, ResumeError> {
        let until = Instant::now() + self.config.deadline;
        let repo = self.deps.repo.as_ref();
        loop {
            match job.sandbox_state {
                SandboxState::Running => return self.answer_running(&job).await,
                // A failed pause may have left it running or paused; connect handles both. Either way the
                // resume is claimed with a compare-and-set, so two processes never resume it twice.
                SandboxState::Paused | SandboxState::PauseFailed => {
                    let from = job.sandbox_state;
                    if let Some(claimed) = set_state(repo, &job, SandboxState::Resuming)
                        .await
                        .map_err(ResumeError::Repo)?
                    {
                        return self.resume_owned(claimed, from, until).await;
                    }
                    tracing::info!("another process claimed the resume; waiting for it");
                }
                SandboxState::Resuming | SandboxState::Pausing => {
                    if Instant::now() >= until {
                        return Err(ResumeError::Unreachable {
                            reason: format!(
                                "the sandbox stayed {} past the deadline",
                                job.sandbox_state
                            ),
                        });
                    }
                    tokio::time::sleep(self.config.poll_interval).await;
                }
                SandboxState::Expired | SandboxState::Killed => {
                    return Err(ResumeError::Expired {
                        reason: format!("the sandbox is {}", job.sandbox_state),
                    })
                }
                SandboxState::None => return Err(ResumeError::NoSandbox),
            }
            job = repo
                .get_job(job.id)
                .await
                .map_err(ResumeError::Repo)?
                .ok_or(ResumeError::NotFound)?;
        }
    }

    /// A running sandbox answers its recorded preview, and the call counts as activity.
    async fn answer_running(&self, job: &Job) -> Result<Resumed, ResumeError> {
        let (Some(preview_url), Some(sandbox_id)) =
            (job.preview_url.clone(), job.sandbox_id.clone())
        else {
            return Err(ResumeError::Unreachable {
                reason: "the sandbox is running but no preview url is recorded".into(),
            });
        };
        self.touch(job.id).await;
        Ok(Resumed {
            preview_url,
            sandbox_id,
        })
    }

    /// We own the resume (`job` as we last wrote or read it): do it, then record the outcome.
    async fn resume_owned(
        &self,
        job: Job,
        before: SandboxState,
        until: Instant,
    ) -> Result<Resumed, ResumeError> {
        let outcome = tokio::time::timeout_at(until, self.attempts(&job)).await;
        match outcome {
            Ok(Ok(attempted)) => self.finish(&job, attempted).await,
            Ok(Err(AttemptError::Expired(reason))) => {
                self.record(&job, SandboxState::Expired).await?;
                Err(ResumeError::Expired { reason })
            }
            Ok(Err(AttemptError::Failed(reason))) => self.settle(&job, before, reason).await,
            Err(_) => {
                let reason = format!("resume did not finish within {:?}", self.config.deadline);
                self.settle(&job, before, reason).await
            }
        }
    }

    /// Records `running` with the preview and when the provider stops the sandbox (Postgres, then Redis),
    /// and answers it.
    async fn finish(&self, job: &Job, attempted: Attempted) -> Result<Resumed, ResumeError> {
        let repo = self.deps.repo.as_ref();
        let Attempted {
            preview_url,
            expires_at,
        } = attempted;
        let update = SandboxStateUpdate {
            expected_version: job.sandbox_state_version,
            state: SandboxState::Running,
            preview_url: Some(preview_url.clone()),
            expires_at: Some(expires_at),
        };
        let written = repo
            .set_sandbox_state(job.id, update)
            .await
            .map_err(ResumeError::Repo)?;
        let job = match written {
            Some(written) => written,
            None => {
                // Someone moved the state while we resumed (a reconciler correction): trust the row.
                let now = repo
                    .get_job(job.id)
                    .await
                    .map_err(ResumeError::Repo)?
                    .ok_or(ResumeError::NotFound)?;
                if now.sandbox_state != SandboxState::Running {
                    return Err(ResumeError::Unreachable {
                        reason: format!(
                            "the sandbox became {} during the resume",
                            now.sandbox_state
                        ),
                    });
                }
                return self.answer_running(&now).await;
            }
        };
        save_live(self.deps.live.as_ref(), &job).await;
        self.touch(job.id).await;
        let sandbox_id = job.sandbox_id.clone().ok_or(ResumeError::NoSandbox)?;
        Ok(Resumed {
            preview_url,
            sandbox_id,
        })
    }

    /// After a failed resume, records what the provider says the sandbox is now (its truth, not ours); a
    /// sandbox left running is paused again first.
    async fn settle(
        &self,
        job: &Job,
        before: SandboxState,
        reason: String,
    ) -> Result<Resumed, ResumeError> {
        let provider = match job.sandbox_id.as_ref() {
            Some(id) => {
                tokio::time::timeout(self.config.settle_timeout, self.deps.runtime.state(id)).await
            }
            None => Ok(Err(SandboxError::NotFound("no sandbox".into()))),
        };
        let state = match provider {
            Ok(Err(SandboxError::NotFound(gone))) => {
                self.record(job, SandboxState::Expired).await?;
                return Err(ResumeError::Expired {
                    reason: format!("{reason}; the provider no longer has it: {gone}"),
                });
            }
            // Running without a working preview: pause it again, so that it stops billing and the next
            // resume goes through the whole path instead of answering a dead preview at once.
            Ok(Ok(ProviderState::Running)) => self.pause_again(job).await,
            Ok(Ok(ProviderState::Paused)) => SandboxState::Paused,
            // Unknown: fall back to the last confirmed state; the reconciler's drift step corrects it.
            Ok(Err(_)) | Err(_) => before,
        };
        if job.sandbox_state != state {
            self.record(job, state).await?;
        }
        Err(ResumeError::Unreachable { reason })
    }

    /// Pauses a sandbox whose resume failed; answers the state it is in afterwards.
    async fn pause_again(&self, job: &Job) -> SandboxState {
        let Some(id) = job.sandbox_id.as_ref() else {
            return SandboxState::Running;
        };
        match tokio::time::timeout(self.config.settle_timeout, self.deps.runtime.pause(id)).await {
            Ok(Ok(_)) => SandboxState::Paused,
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "could not pause the sandbox after a failed resume");
                SandboxState::Running
            }
            Err(_) => {
                tracing::warn!("pausing the sandbox after a failed resume timed out");
                SandboxState::Running
            }
        }
    }

    async fn record(&self, job: &Job, state: SandboxState) -> Result<(), ResumeError> {
        let written = set_state(self.deps.repo.as_ref(), job, state)
            .await
            .map_err(ResumeError::Repo)?;
        match written {
            Some(written) => save_live(self.deps.live.as_ref(), &written).await,
            None => tracing::info!(state = %state, "the sandbox state moved on; not recorded"),
        }
        Ok(())
    }

    async fn touch(&self, job_id: JobId) {
        if let Err(error) = crate::usecases::activity::touch(self.deps.repo.as_ref(), job_id).await
        {
            tracing::warn!(error = %error, "could not note preview activity");
        }
    }
}

mod attempt;

#[cfg(test)]
#[path = "resume_tests.rs"]
mod tests;
