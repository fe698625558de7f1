//! The run loop: lease jobs while there are free slots, build each in its own task, and on shutdown stop
//! leasing, give running builds a grace period, then stop them (their jobs go back to the queue).

use std::sync::Arc;
use std::time::Duration;

use domain::ports::JobQueue;
use domain::usecases::pipeline::{PipelineConfig, PipelineDeps};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cancels::{self, CancelWatch};
use crate::job;

/// After a queue error, how long before the next try.
const QUEUE_ERROR_BACKOFF: Duration = Duration::from_secs(2);

/// The adapters a worker runs on.
#[derive(Clone)]
pub struct WorkerDeps {
    pub pipeline: PipelineDeps,
    pub queue: Arc<dyn JobQueue>,
}

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// This worker's name on its leases; unique among the workers sharing a queue.
    pub worker_id: String,
    /// Builds at once.
    pub concurrency: usize,
    /// A lease's lifetime without a heartbeat.
    pub lease_ttl: Duration,
    /// How long running builds may go on after shutdown is asked for.
    pub shutdown_grace: Duration,
    /// How long to wait before leasing again when the queue had nothing.
    pub poll_interval: Duration,
    pub pipeline: PipelineConfig,
}

/// Runs builds until `shutdown` fires, then drains: builds still running after the grace period are
/// stopped, their sandboxes killed and their jobs requeued. Returns once every build has ended and every
/// lease is acked or released.
#[tracing::instrument(name = "worker", skip_all, fields(worker_id = %settings.worker_id))]
pub async fn run(
    deps: WorkerDeps,
    settings: WorkerSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    crate::metrics::register();
    let deps = Arc::new(deps);
    let settings = Arc::new(settings);
    let slots = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let tracker = TaskTracker::new();
    // The parent of every build's token: fired only when the grace period is over.
    let stop_builds = CancellationToken::new();
    // Opened before the first lease, so that a build is followed from its start whenever Redis is up.
    let watch = Arc::new(CancelWatch::default());
    let stop_watch = CancellationToken::new();
    let first_feed = cancels::subscribe(deps.pipeline.live.as_ref()).await;
    let following = tokio::spawn(watch.clone().follow(
        deps.pipeline.live.clone(),
        first_feed,
        stop_watch.clone(),
    ));
    tracing::info!(concurrency = settings.concurrency, "worker started");

    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => permit?,
        };
        // Not raced against shutdown: a lease dropped in flight would be taken and never worked on.
        match deps
            .queue
            .lease(&settings.worker_id, settings.lease_ttl)
            .await
        {
            Ok(Some(lease)) => {
                if shutdown.is_cancelled() {
                    job::release(deps.queue.as_ref(), &lease).await;
                    break;
                }
                let (deps, settings, watch) = (deps.clone(), settings.clone(), watch.clone());
                let token = stop_builds.child_token();
                tracker.spawn(async move {
                    job::run_leased(&deps, &settings, lease, token, &watch).await;
                    drop(permit);
                });
            }
            Ok(None) => {
                drop(permit);
                if pause_unless_shutdown(&shutdown, settings.poll_interval).await {
                    break;
                }
            }
            Err(error) => {
                drop(permit);
                tracing::warn!(error = %error, "could not lease a job");
                if pause_unless_shutdown(&shutdown, QUEUE_ERROR_BACKOFF).await {
                    break;
                }
            }
        }
    }

    tracker.close();
    tracing::info!(
        running = tracker.len(),
        grace_secs = settings.shutdown_grace.as_secs(),
        "shutting down: no new jobs; waiting for running builds"
    );
    if tokio::time::timeout(settings.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            running = tracker.len(),
            "grace period over; stopping the remaining builds and requeueing their jobs"
        );
        stop_builds.cancel();
        tracker.wait().await;
    }
    stop_watch.cancel();
    if let Err(error) = following.await {
        tracing::warn!(error = %error, "the cancel watch ended abnormally");
    }
    tracing::info!("worker stopped");
    Ok(())
}

/// Waits `pause`; `true` when shutdown came first.
async fn pause_unless_shutdown(shutdown: &CancellationToken, pause: Duration) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(pause) => false,
    }
}
