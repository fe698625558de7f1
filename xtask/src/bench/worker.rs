//! The job worker, in the bench process, over the instant runtime.
//!
//! It runs the domain's build pipeline (`run_build`, pause after READY included) exactly as job-worker
//! does, behind the same Redis queue with leases: lease, count the attempt, build, then ack or release.
//! TODO(bench): once `job_worker`'s run loop takes its ports injected, call it here instead of this loop
//! so that the worker's own bookkeeping (heartbeats, reconciler) is measured too.

use std::sync::Arc;
use std::time::Duration;

use domain::ports::{JobQueue, JobRepository};
use domain::usecases::pipeline::{run_build, BuildOutcome, PipelineConfig, PipelineDeps};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A lease outlives any instant build many times over.
const LEASE_TTL: Duration = Duration::from_secs(300);
/// How long the loop waits before asking again when the queue is empty.
const IDLE_POLL: Duration = Duration::from_millis(2);

/// The in-process worker: its loop and the builds in flight stop when `cancel` fires.
pub struct Worker {
    pub repo: Arc<dyn JobRepository>,
    pub queue: Arc<dyn JobQueue>,
    pub deps: PipelineDeps,
    pub concurrency: usize,
}

impl Worker {
    /// Leases and builds jobs, up to `concurrency` at once, until `cancel` fires; then waits for the
    /// builds in flight.
    pub async fn run(self, cancel: CancellationToken) {
        let config = PipelineConfig {
            readiness_interval: Duration::from_millis(1),
            ..PipelineConfig::default()
        };
        let config = Arc::new(config);
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let tracker = TaskTracker::new();
        let worker_id = format!("bench-{}", uuid::Uuid::new_v4().simple());
        loop {
            let permit = tokio::select! {
                () = cancel.cancelled() => break,
                permit = Arc::clone(&slots).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let lease = match self.queue.lease(&worker_id, LEASE_TTL).await {
                Ok(Some(lease)) => lease,
                Ok(None) => {
                    drop(permit);
                    idle(&cancel).await;
                    continue;
                }
                Err(error) => {
                    eprintln!("bench: worker: lease failed: {error}");
                    drop(permit);
                    idle(&cancel).await;
                    continue;
                }
            };
            let job_id = lease.job.job_id;
            let repo = Arc::clone(&self.repo);
            let queue = Arc::clone(&self.queue);
            let deps = self.deps.clone();
            let config = Arc::clone(&config);
            let cancel = cancel.child_token();
            tracker.spawn(async move {
                let _permit = permit;
                if let Err(error) = repo.increment_attempts(job_id).await {
                    eprintln!("bench: worker: attempt of {job_id} not counted: {error}");
                }
                let outcome = run_build(&deps, &config, job_id, cancel).await;
                let finished = match outcome {
                    BuildOutcome::Interrupted { requeued: true } => queue.release(&lease).await,
                    _ => queue.ack(&lease).await,
                };
                if let Err(error) = finished {
                    eprintln!("bench: worker: lease of {job_id} not finished: {error}");
                }
            });
        }
        tracker.close();
        tracker.wait().await;
    }
}

async fn idle(cancel: &CancellationToken) {
    tokio::select! {
        () = cancel.cancelled() => {}
        () = tokio::time::sleep(IDLE_POLL) => {}
    }
}
