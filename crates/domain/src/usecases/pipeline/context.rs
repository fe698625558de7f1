//! One build in progress: the job as we last wrote it, our sandbox, and the moves every stage makes (a
//! compare-and-set in Postgres, then the Redis mirror and event).

use std::future::Future;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::failure::PipelineError;
use super::{PipelineConfig, PipelineDeps};
use crate::ports::{RepoError, TransitionOutcome, TransitionUpdate};
use crate::usecases::logs::LogWriter;
use crate::{Job, JobEvent, JobStatus, SandboxId};

/// Why a build stopped short of READY.
#[derive(Debug)]
pub(super) enum Stop {
    /// The build failed; the failure is recorded on the job.
    Failed(PipelineError),
    /// Our cancellation token fired (shutdown, lost lease, or a cancel seen by the heartbeat).
    Cancelled,
    /// A compare-and-set lost: someone else moved the job (`None`: it is gone).
    Conflict { current: Option<JobStatus> },
    /// Postgres failed (after the repository's own retries), so the stage could not be recorded. Not the
    /// build's fault: the job is given back, never failed for it.
    Repo(RepoError),
}

impl From<PipelineError> for Stop {
    fn from(e: PipelineError) -> Self {
        Stop::Failed(e)
    }
}

pub(super) struct Build<'a> {
    pub(super) deps: &'a PipelineDeps,
    pub(super) config: &'a PipelineConfig,
    pub(super) cancel: &'a CancellationToken,
    /// The job as last written by us (or as a write of ours returned it).
    pub(super) job: Job,
    /// Our sandbox once created: unless the build ends READY, it is killed.
    pub(super) sandbox: Option<SandboxId>,
    /// The build's log: system lines and every command's output, live.
    pub(super) log: LogWriter,
}

impl<'a> Build<'a> {
    pub(super) fn new(
        deps: &'a PipelineDeps,
        config: &'a PipelineConfig,
        cancel: &'a CancellationToken,
        job: Job,
    ) -> Self {
        let log = LogWriter::start(deps.logs.clone(), job.id, Vec::new());
        Self {
            deps,
            config,
            cancel,
            job,
            sandbox: None,
            log,
        }
    }

    /// The build's fencing token: the attempt its first move counted. Every later write carries it.
    pub(super) fn attempt(&self) -> i32 {
        self.job.attempts
    }

    pub(super) fn check_cancelled(&self) -> Result<(), Stop> {
        if self.cancel.is_cancelled() {
            Err(Stop::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Runs a long step unless the token fires first; a step cut short is dropped, and the sandbox it ran in
    /// is killed by the caller.
    pub(super) async fn race<F: Future>(&self, step: F) -> Result<F::Output, Stop> {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(Stop::Cancelled),
            out = step => Ok(out),
        }
    }

    /// Moves the job on from its current status: the compare-and-set, fenced by this build's attempt, then
    /// the live hash and the event. Checks the token first, so a cancelled build never writes another stage
    /// (READY least of all).
    pub(super) async fn advance(
        &mut self,
        to: JobStatus,
        update: TransitionUpdate,
    ) -> Result<(), Stop> {
        self.check_cancelled()?;
        let from = self.job.status;
        let message = update.message.clone().unwrap_or_default();
        let update = TransitionUpdate {
            attempt: Some(self.attempt()),
            ..update
        };
        match self
            .deps
            .repo
            .transition(self.job.id, from, to, update)
            .await
            .map_err(Stop::Repo)?
        {
            TransitionOutcome::Applied(job) => {
                self.job = *job;
                tracing::info!(from = %from, to = %to, "stage started");
                self.log.system(to.as_str(), &format!("--- {message} ---"));
                self.publish(message).await;
                Ok(())
            }
            TransitionOutcome::Conflict { current } => {
                tracing::info!(expected = %from, current = ?current.map(JobStatus::as_str), "job moved under the build");
                Err(Stop::Conflict { current })
            }
        }
    }

    /// Mirrors the job to Redis with an event. Redis is rebuildable from Postgres, so a failure here is
    /// logged and the build goes on.
    pub(super) async fn publish(&self, message: String) {
        let event = JobEvent {
            job_id: self.job.id,
            status: self.job.status,
            message,
            preview_url: self.job.preview_url.clone(),
            timestamp: Utc::now(),
        };
        if let Err(error) = self.deps.live.save_and_publish(&self.job, &event).await {
            tracing::warn!(error = %error, status = %self.job.status, "live job hash not updated");
        }
    }

    /// Mirrors the job to Redis without an event (a sandbox change, not a stage).
    pub(super) async fn save_live(&self) {
        if let Err(error) = self.deps.live.save(&self.job).await {
            tracing::warn!(error = %error, "live job hash not updated");
        }
    }

    pub(super) fn message(text: impl Into<String>) -> TransitionUpdate {
        TransitionUpdate {
            message: Some(text.into()),
            ..TransitionUpdate::default()
        }
    }
}
