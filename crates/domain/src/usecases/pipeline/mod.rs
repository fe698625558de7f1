//! The build pipeline: queued → starting → scaffold → code → deps → checks → ready, then pause after READY.
//!
//! Every stage is a compare-and-set in Postgres followed by the Redis mirror and event, so a job cancelled
//! (moved to failed) by the API stops the build at its next step, and no READY is ever written for it. The
//! sandbox id is recorded the moment the sandbox exists; any build that does not end READY kills it.

mod context;
pub mod failure;
pub mod files;
mod finish;
pub mod package;
pub mod pause;
mod stages;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::ports::{
    CodeGenerator, JobRepository, LiveJobStore, LiveLog, LogArchive, PreviewProbe, SandboxRuntime,
    TransitionOutcome,
};
use crate::usecases::logs::finish_log;
use crate::{DebugId, JobId, JobStatus, PausePolicy};

pub use failure::{PipelineError, Step};
pub use files::{FileError, ValidatedFiles};
pub use finish::REQUEUED_MESSAGE;
pub use package::{PackageJsonError, PackageJsonParser};
pub use pause::{pause_job_sandbox, PauseDeps, PauseResult};

/// The ports a build uses.
#[derive(Clone)]
pub struct PipelineDeps {
    pub repo: Arc<dyn JobRepository>,
    pub live: Arc<dyn LiveJobStore>,
    pub runtime: Arc<dyn SandboxRuntime>,
    pub generator: Arc<dyn CodeGenerator>,
    pub probe: Arc<dyn PreviewProbe>,
    pub package_parser: Arc<dyn PackageJsonParser>,
    /// The build's live log.
    pub logs: Arc<dyn LiveLog>,
    /// Where the log goes once the build ends.
    pub log_archive: Arc<dyn LogArchive>,
}

/// The pipeline's knobs; [`Default`] is what production runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineConfig {
    pub pause_policy: PausePolicy,
    /// The sandbox's lifetime at the provider, from its creation.
    pub sandbox_timeout: Duration,
    /// Whether the provider pauses (rather than kills) the sandbox when its lifetime runs out.
    pub auto_pause: bool,
    /// How long the code generator may take.
    pub generate_timeout: Duration,
    /// How long `npm install` may take.
    pub install_timeout: Duration,
    /// How long the dev server has to answer below 500.
    pub readiness_deadline: Duration,
    /// How often the preview is probed while waiting.
    pub readiness_interval: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            pause_policy: PausePolicy::Immediate,
            sandbox_timeout: Duration::from_secs(30 * 60),
            auto_pause: true,
            generate_timeout: Duration::from_secs(10 * 60),
            install_timeout: Duration::from_secs(5 * 60),
            readiness_deadline: Duration::from_secs(120),
            readiness_interval: Duration::from_secs(1),
        }
    }
}

/// How a build ended, for the worker to ack, release or count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildOutcome {
    /// READY was written. `paused`: the provider confirmed the pause and both stores say so.
    /// `pause_failed`: the policy asked for a pause and it did not happen (the reconciler retries).
    Ready { paused: bool, pause_failed: bool },
    /// The failure is recorded on the job under this debug id; the sandbox was killed.
    Failed { debug_id: DebugId },
    /// Someone else moved the job to failed (a cancel) during the build; its sandbox was killed.
    Cancelled,
    /// The job was not ours to build: missing, not queued when we started, or moved elsewhere.
    Lost { current: Option<JobStatus> },
    /// Our token fired (shutdown or a lost lease) while the job was still ours, or Postgres failed.
    /// `requeued`: the row is `queued` again (or never left it), so the lease should go back to the queue;
    /// otherwise the row is left for the reconciler.
    Interrupted { requeued: bool },
}

/// Builds one leased job from `queued` to READY (and pauses it), or records why not.
///
/// `cancel` stops the build at its next step; a step in flight is abandoned (except creating the sandbox,
/// which always completes so that the sandbox is recorded and then killed).
#[tracing::instrument(
    name = "build",
    skip_all,
    fields(job_id = %job_id, user_id = tracing::field::Empty, sandbox_id = tracing::field::Empty)
)]
pub async fn run_build(
    deps: &PipelineDeps,
    config: &PipelineConfig,
    job_id: JobId,
    cancel: CancellationToken,
) -> BuildOutcome {
    if cancel.is_cancelled() {
        // Nothing was written: the job is still queued.
        return BuildOutcome::Interrupted { requeued: true };
    }
    // The first move is also the check that the job is ours: only a queued job moves to starting, and the
    // row the compare-and-set returns is the job to build (no read before it).
    let job = match deps
        .repo
        .transition(
            job_id,
            JobStatus::Queued,
            JobStatus::Starting,
            context::Build::message(STARTING_MESSAGE),
        )
        .await
    {
        Ok(TransitionOutcome::Applied(job)) => *job,
        Ok(TransitionOutcome::Conflict { current }) => {
            tracing::info!(current = ?current.map(JobStatus::as_str), "job is not queued; skipped");
            return BuildOutcome::Lost { current };
        }
        Err(error) => {
            // Nothing was written: the job is still queued, and another attempt may find Postgres back.
            tracing::error!(error = %error, "could not start the build");
            return BuildOutcome::Interrupted { requeued: true };
        }
    };
    tracing::Span::current().record("user_id", tracing::field::display(&job.user_id));
    tracing::info!(attempts = job.attempts, "build started");
    let mut build = context::Build::new(deps, config, &cancel, job);
    let log = build.log.clone();
    log.system(
        JobStatus::Starting.as_str(),
        "--- Starting generation pipeline ---",
    );
    build.publish(STARTING_MESSAGE.to_owned()).await;
    let outcome = match build.run_to_ready().await {
        Ok(()) => build.after_ready().await,
        Err(stop) => build.finish(stop).await,
    };
    tracing::info!(outcome = ?outcome, "build finished");
    // Every line printed so far is in the live log; a finished job's log is ended and archived.
    log.close().await;
    if let Some(status) = outcome.terminal_status() {
        let archived = finish_log(
            deps.logs.as_ref(),
            deps.log_archive.as_ref(),
            job_id,
            status.as_str(),
        )
        .await;
        if let Err(error) = archived {
            tracing::warn!(error = %error, "build log not archived; it stays live until its TTL");
        }
    }
    outcome
}

impl BuildOutcome {
    /// The job's status when the build left it finished (READY, or failed by us or by a cancel).
    pub fn terminal_status(&self) -> Option<JobStatus> {
        match self {
            BuildOutcome::Ready { .. } => Some(JobStatus::Ready),
            BuildOutcome::Failed { .. } | BuildOutcome::Cancelled => Some(JobStatus::Failed),
            BuildOutcome::Lost { .. } | BuildOutcome::Interrupted { .. } => None,
        }
    }
}

/// The status message of the first stage.
const STARTING_MESSAGE: &str = "Starting build";

#[cfg(test)]
mod tests;
