//! The reconciler loop: runs the domain's [`Reconciler`] every interval until shutdown, each step under a
//! Redis lock so that many workers do not repeat it, and turns its reports into metrics.

use std::sync::Arc;
use std::time::Duration;

use domain::ports::{LogArchive, StepLock};
use domain::usecases::reconcile::{step, Reconciler, RunReport, StepRun};
use tokio_util::sync::CancellationToken;

use crate::metrics::{change, drift, CHANGES, DRIFT, STEP_FAILURES, STEP_SECONDS};

/// Runs reconcile passes every `interval` until `shutdown` fires. A pass in progress is finished first: each
/// step is idempotent, but stopping one halfway would leave its lock to expire on its own.
#[tracing::instrument(name = "reconciler", skip_all)]
pub async fn run_reconciler(
    reconciler: Arc<Reconciler>,
    lock: Arc<dyn StepLock>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    tracing::info!(interval_secs = interval.as_secs(), "reconciler started");
    loop {
        let report = reconciler.run_once(lock.as_ref()).await;
        record(&report);
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(interval) => {}
        }
    }
    tracing::info!("reconciler stopped");
}

/// How often archived logs past their retention are purged.
const LOG_PURGE_EVERY: Duration = Duration::from_secs(60 * 60);

/// Deletes archived build logs older than `retention`, at once and then every hour, until `shutdown`.
/// Idempotent, so every worker may run it.
#[tracing::instrument(name = "log_retention", skip_all)]
pub async fn run_log_retention(
    archive: Arc<dyn LogArchive>,
    retention: Duration,
    shutdown: CancellationToken,
) {
    loop {
        match archive.purge(retention).await {
            Ok(0) => {}
            Ok(purged) => {
                tracing::info!(purged, "archived build logs past their retention deleted")
            }
            Err(error) => tracing::warn!(error = %error, "archived build logs not purged"),
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(LOG_PURGE_EVERY) => {}
        }
    }
}

/// Counts what each step changed and how long it took.
fn record(report: &RunReport) {
    step(step::LEASES, &report.leases, |r| {
        counter(change::REQUEUED, r.requeued);
        counter(change::LEASE_FAILED, r.failed);
        counter(change::LEAKED_KILLED, r.sandboxes_killed);
    });
    step(step::REBUILD, &report.rebuild, |r| {
        counter(change::QUEUE_REBUILT, r.requeued);
        counter(change::HASH_REBUILT, r.hashes_rebuilt);
    });
    step(step::PROMOTE, &report.promote, |r| {
        counter(change::PROMOTED, r.promoted)
    });
    step(step::DRIFT, &report.drift, |r| {
        corrected(drift::TO_PAUSED, r.to_paused);
        corrected(drift::TO_RUNNING, r.to_running);
        corrected(drift::TO_EXPIRED, r.to_expired);
        corrected(drift::STALE_SETTLED, r.stale_settled);
    });
    step(step::LEAKS, &report.leaks, |r| {
        counter(change::LEAKED_KILLED, r.killed)
    });
    step(step::FAILED_PAUSES, &report.failed_pauses, |r| {
        counter(change::PAUSE_RETRIED_OK, r.paused);
        counter(change::PAUSE_RETRY_FAILED, r.failed);
        counter(change::PAUSE_GAVE_UP, r.gave_up);
    });
    step(step::IDLE, &report.idle, |r| {
        counter(change::IDLE_REPAUSED, r.paused)
    });
}

fn step<R>(name: &'static str, run: &StepRun<R>, changes: impl FnOnce(&R)) {
    match run {
        StepRun::Skipped => {}
        StepRun::Done { report, elapsed } => {
            metrics::histogram!(STEP_SECONDS, "step" => name).record(elapsed.as_secs_f64());
            changes(report);
        }
        // The domain already logged the error with its step; only count it here.
        StepRun::Failed { elapsed, .. } => {
            metrics::histogram!(STEP_SECONDS, "step" => name).record(elapsed.as_secs_f64());
            metrics::counter!(STEP_FAILURES, "step" => name).increment(1);
        }
    }
}

fn counter(kind: &'static str, n: usize) {
    if n > 0 {
        metrics::counter!(CHANGES, "kind" => kind).increment(n as u64);
    }
}

fn corrected(kind: &'static str, n: usize) {
    if n > 0 {
        metrics::counter!(DRIFT, "kind" => kind).increment(n as u64);
    }
}
