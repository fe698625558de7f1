//! The reconciler loop: runs the domain's [`Reconciler`] every interval until shutdown, each step under a
//! Redis lock so that many workers do not repeat it, and turns its reports into metrics.

use std::sync::Arc;
use std::time::Duration;

use domain::ports::StepLock;
use domain::usecases::reconcile::{Reconciler, RunReport, StepRun};
use tokio_util::sync::CancellationToken;

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

/// Counts what each step changed and how long it took.
fn record(report: &RunReport) {
    step("leases", &report.leases, |r| {
        counter("requeued", r.requeued);
        counter("lease_failed", r.failed);
        counter("leaked_killed", r.sandboxes_killed);
    });
    step("rebuild_redis", &report.rebuild, |r| {
        counter("queue_rebuilt", r.requeued);
        counter("hash_rebuilt", r.hashes_rebuilt);
    });
    step("promote_scheduled", &report.promote, |r| {
        counter("promoted", r.promoted)
    });
    step("drift", &report.drift, |r| {
        drift("to_paused", r.to_paused);
        drift("to_running", r.to_running);
        drift("to_expired", r.to_expired);
        drift("stale_settled", r.stale_settled);
    });
    step("leaks", &report.leaks, |r| {
        counter("leaked_killed", r.killed)
    });
    step("failed_pauses", &report.failed_pauses, |r| {
        counter("pause_retried_ok", r.paused);
        counter("pause_retry_failed", r.failed);
        counter("pause_gave_up", r.gave_up);
    });
    step("idle_repause", &report.idle, |r| {
        counter("idle_repaused", r.paused)
    });
}

fn step<R>(name: &'static str, run: &StepRun<R>, changes: impl FnOnce(&R)) {
    match run {
        StepRun::Skipped => {}
        StepRun::Done { report, elapsed } => {
            metrics::histogram!("slipway_reconcile_step_seconds", "step" => name)
                .record(elapsed.as_secs_f64());
            changes(report);
        }
        // The domain already logged the error with its step; only count it here.
        StepRun::Failed { elapsed, .. } => {
            metrics::histogram!("slipway_reconcile_step_seconds", "step" => name)
                .record(elapsed.as_secs_f64());
            metrics::counter!("slipway_reconcile_step_failures_total", "step" => name).increment(1);
        }
    }
}

fn counter(kind: &'static str, n: usize) {
    if n > 0 {
        metrics::counter!("slipway_reconcile_changes_total", "kind" => kind).increment(n as u64);
    }
}

fn drift(kind: &'static str, n: usize) {
    if n > 0 {
        metrics::counter!("slipway_drift_corrections_total", "kind" => kind).increment(n as u64);
    }
}
