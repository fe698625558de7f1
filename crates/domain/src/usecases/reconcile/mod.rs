//! The reconciler: keeps our records true to the provider and the queue true to Postgres.
//!
//! A [`Reconciler`] has one async method per step. Each step is idempotent (running it twice changes
//! nothing the first run did not), logs what it changed with job_id/sandbox_id fields, and returns a
//! small report of counts that the worker turns into metrics (domain has no metrics crate).
//! [`Reconciler::run_once`] runs every step, each under its own [`StepLock`] so that many workers do not
//! repeat a step at the same time.
//!
//! The steps, in `run_once` order:
//! 1. [`Reconciler::recover_expired_leases`]: builds whose worker vanished are requeued or failed;
//! 2. [`Reconciler::rebuild_redis`]: queued jobs missing from the queue and missing hashes are restored;
//! 3. [`Reconciler::promote_scheduled`]: scheduled jobs are queued after the daily reset;
//! 4. [`Reconciler::correct_drift`]: sandbox states follow the provider's truth;
//! 5. [`Reconciler::kill_leaks`]: sandboxes no live job owns are killed;
//! 6. [`Reconciler::retry_failed_pauses`]: failed post-READY pauses are retried with backoff;
//! 7. [`Reconciler::repause_idle`]: resumed sandboxes idle past `idle_pause_after` are paused again.

mod drift;
mod leaks;
mod leases;
mod local_lock;
mod pauses;
mod promote;
mod rebuild;

/// Jobs in given states, for the tests of this crate and of the binaries (feature `mocks`).
#[cfg(any(test, feature = "mocks"))]
pub mod fixtures;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::ports::{
    JobQueue, JobRepository, LiveJobStore, PageAfter, QueueError, RepoError, SandboxError,
    SandboxRuntime, StepLock, StoreError,
};
use crate::{Job, JobId, JobStatus, PausePolicy};

pub use drift::DriftReport;
pub use leaks::LeakReport;
pub use leases::LeaseReport;
pub use local_lock::LocalStepLock;
pub use pauses::PauseReport;
pub use promote::PromoteReport;
pub use rebuild::RebuildReport;

/// What the reconciler reaches.
#[derive(Clone)]
pub struct ReconcileDeps {
    pub repo: Arc<dyn JobRepository>,
    pub live: Arc<dyn LiveJobStore>,
    pub queue: Arc<dyn JobQueue>,
    pub runtime: Arc<dyn SandboxRuntime>,
}

/// The reconciler's policy. Every interval is configurable (job-worker's settings); the defaults are
/// production's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileConfig {
    /// When a READY build's sandbox is paused (`PAUSE_POLICY`); decides which running sandboxes are failed
    /// pauses and which are merely idle.
    pub pause_policy: PausePolicy,
    /// A resumed sandbox is paused again after this long without activity (`IDLE_PAUSE_SECS`, 600 s).
    pub idle_pause_after: Duration,
    /// A READY sandbox left running by a failed pause is first retried this long after READY. A few
    /// seconds: every second a READY sandbox runs is billed.
    pub pause_grace: Duration,
    /// The wait after a failed retry; doubled after each failure up to `pause_backoff_max`.
    pub pause_backoff_base: Duration,
    pub pause_backoff_max: Duration,
    /// A `pausing` record this old lost its pauser (a worker killed mid-pause, a write that failed): the
    /// provider is asked what became of the pause, and the pause finished or retried.
    pub pausing_stale_after: Duration,
    /// After this many failed pauses in a row the state becomes `pause_failed` (retries continue at
    /// `pause_backoff_max`).
    pub max_pause_attempts: u32,
    /// A build whose worker vanished is requeued while its attempts are below this, then failed.
    pub max_build_attempts: i32,
    /// A building job absent from the queue's lease set (a Redis loss) is recovered after this long
    /// without a transition: the lease TTL, the longest a live build goes without noticing that its lease
    /// is gone.
    pub orphan_after: Duration,
    /// A `resuming` state older than this was left by a crash and is set to the provider's truth; longer
    /// than a resume may take.
    pub stale_transition_after: Duration,
    /// The rows one read takes: every step pages through all of its rows, this many at a time.
    pub scan_limit: i64,
    /// Scheduled jobs are promoted within this long after midnight UTC (a fixed per-job offset).
    pub promote_jitter: Duration,
    /// How long a step's lock is held at most (a crashed holder blocks the others this long).
    pub step_lock_ttl: Duration,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        Self {
            pause_policy: PausePolicy::Immediate,
            idle_pause_after: Duration::from_secs(600),
            pause_grace: Duration::from_secs(5),
            pause_backoff_base: Duration::from_secs(2),
            pause_backoff_max: Duration::from_secs(120),
            pausing_stale_after: Duration::from_secs(30),
            max_pause_attempts: 5,
            max_build_attempts: 3,
            orphan_after: Duration::from_secs(60),
            stale_transition_after: Duration::from_secs(120),
            scan_limit: 500,
            promote_jitter: Duration::from_secs(5 * 60),
            step_lock_ttl: Duration::from_secs(120),
        }
    }
}

/// Why a whole step could not run (a per-job failure is logged and counted in the step's report instead).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReconcileError {
    #[error("job repository failed")]
    Repo(#[from] RepoError),
    #[error("live store failed")]
    Store(#[from] StoreError),
    #[error("job queue failed")]
    Queue(#[from] QueueError),
    #[error("sandbox provider failed")]
    Sandbox(#[from] SandboxError),
}

/// How one step went in [`Reconciler::run_once`].
#[derive(Debug, Clone, PartialEq)]
pub enum StepRun<R> {
    /// Another worker holds the step's lock (or the lock store failed); nothing ran here.
    Skipped,
    Done {
        report: R,
        elapsed: Duration,
    },
    Failed {
        error: ReconcileError,
        elapsed: Duration,
    },
}

/// Every step's outcome of one [`Reconciler::run_once`].
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    pub leases: StepRun<LeaseReport>,
    pub rebuild: StepRun<RebuildReport>,
    pub promote: StepRun<PromoteReport>,
    pub drift: StepRun<DriftReport>,
    pub leaks: StepRun<LeakReport>,
    pub failed_pauses: StepRun<PauseReport>,
    pub idle: StepRun<PauseReport>,
}

/// The step names, used as lock names (`reconcile:<name>`) and in logs.
pub mod step {
    pub const LEASES: &str = "leases";
    pub const REBUILD: &str = "rebuild_redis";
    pub const PROMOTE: &str = "promote_scheduled";
    pub const DRIFT: &str = "drift";
    pub const LEAKS: &str = "leaks";
    pub const FAILED_PAUSES: &str = "failed_pauses";
    pub const IDLE: &str = "idle_repause";
}

/// Where a step is in a listing it pages through.
#[derive(Debug, Default)]
struct Pages {
    after: Option<PageAfter>,
    /// The last page was shorter than a full one: there is nothing after it.
    done: bool,
}

impl Pages {
    /// Moves past `page`; `None` when it is empty.
    fn advance(&mut self, page: Vec<Job>, limit: i64) -> Option<Vec<Job>> {
        self.done = i64::try_from(page.len()).unwrap_or(i64::MAX) < limit;
        let last = page.last()?;
        self.after = Some(PageAfter::job(last));
        Some(page)
    }
}

/// Failed pauses seen by this process: how many in a row, and when to try next.
#[derive(Debug, Clone, Copy)]
struct PauseBackoff {
    failures: u32,
    /// On the clock passed to the steps (`now`), not the process clock.
    next_retry_at: DateTime<Utc>,
}

/// Runs the reconcile steps; one per worker process.
pub struct Reconciler {
    deps: ReconcileDeps,
    config: ReconcileConfig,
    /// Kept in process: after a restart (or on another worker) a job starts from its first retry, which
    /// is harmless; `pause_failed` in Postgres keeps the durable part.
    backoff: Mutex<HashMap<JobId, PauseBackoff>>,
    /// Where the rebuild of finished jobs' hashes goes on from, per status (see [`rebuild`]).
    rebuild_cursors: Mutex<HashMap<JobStatus, PageAfter>>,
}

impl Reconciler {
    pub fn new(deps: ReconcileDeps, config: ReconcileConfig) -> Self {
        Self {
            deps,
            config,
            backoff: Mutex::default(),
            rebuild_cursors: Mutex::default(),
        }
    }

    pub fn config(&self) -> &ReconcileConfig {
        &self.config
    }

    /// Runs every step once, each under its lock `reconcile:<step>`; a step whose lock is held elsewhere
    /// is skipped. A failing step does not stop the others.
    pub async fn run_once(&self, lock: &dyn StepLock) -> RunReport {
        RunReport {
            leases: self
                .locked(lock, step::LEASES, self.recover_expired_leases(Utc::now()))
                .await,
            rebuild: self.locked(lock, step::REBUILD, self.rebuild_redis()).await,
            promote: self
                .locked(lock, step::PROMOTE, self.promote_scheduled(Utc::now()))
                .await,
            drift: self
                .locked(lock, step::DRIFT, self.correct_drift(Utc::now()))
                .await,
            leaks: self.locked(lock, step::LEAKS, self.kill_leaks()).await,
            failed_pauses: self
                .locked(
                    lock,
                    step::FAILED_PAUSES,
                    self.retry_failed_pauses(Utc::now()),
                )
                .await,
            idle: self
                .locked(lock, step::IDLE, self.repause_idle(Utc::now()))
                .await,
        }
    }

    /// Every job with `status`, read a page at a time (for the small sets: building, scheduled; steps over
    /// large ones go page by page with [`Self::page_by_status`]).
    async fn all_with_status(&self, status: JobStatus) -> Result<Vec<Job>, RepoError> {
        let mut all = Vec::new();
        let mut pages = Pages::default();
        while let Some(page) = self.page_by_status(status, &mut pages).await? {
            all.extend(page);
        }
        Ok(all)
    }

    /// The next page of jobs with `status`; `None` once every one was read.
    async fn page_by_status(
        &self,
        status: JobStatus,
        pages: &mut Pages,
    ) -> Result<Option<Vec<Job>>, RepoError> {
        if pages.done {
            return Ok(None);
        }
        let page = self
            .deps
            .repo
            .list_jobs_by_status(status, pages.after, self.config.scan_limit)
            .await?;
        Ok(pages.advance(page, self.config.scan_limit))
    }

    /// The next page of jobs needing attention (see [`Self::page_by_status`]).
    async fn page_needing_attention(
        &self,
        pages: &mut Pages,
    ) -> Result<Option<Vec<Job>>, RepoError> {
        if pages.done {
            return Ok(None);
        }
        let page = self
            .deps
            .repo
            .jobs_needing_attention(pages.after, self.config.scan_limit)
            .await?;
        Ok(pages.advance(page, self.config.scan_limit))
    }

    async fn locked<R>(
        &self,
        lock: &dyn StepLock,
        name: &'static str,
        step: impl Future<Output = Result<R, ReconcileError>>,
    ) -> StepRun<R> {
        let lock_name = format!("reconcile:{name}");
        let token = match lock.try_lock(&lock_name, self.config.step_lock_ttl).await {
            Ok(Some(token)) => token,
            Ok(None) => return StepRun::Skipped,
            Err(error) => {
                tracing::warn!(step = name, error = %error, "could not take the step lock; skipping");
                return StepRun::Skipped;
            }
        };
        let started = Instant::now();
        let result = step.await;
        let elapsed = started.elapsed();
        if let Err(error) = lock.unlock(token).await {
            tracing::warn!(step = name, error = %error, "could not release the step lock");
        }
        let step_duration_ms = elapsed.as_millis() as u64;
        match result {
            Ok(report) => {
                tracing::debug!(step = name, step_duration_ms, "reconcile step done");
                StepRun::Done { report, elapsed }
            }
            Err(error) => {
                tracing::warn!(step = name, step_duration_ms, error = %error, "reconcile step failed");
                StepRun::Failed { error, elapsed }
            }
        }
    }
}

#[cfg(test)]
#[path = "run_tests.rs"]
mod tests;
