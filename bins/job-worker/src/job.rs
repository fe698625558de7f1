//! One leased job: build it while a heartbeat keeps the lease alive and the worker's [`CancelWatch`] can
//! stop it, then ack or release the lease according to how the build ended. The build itself checks that
//! the job is still queued, and its first move (queued → starting) counts the attempt.
//!
//! A cancel is seen at once through the worker's failures feed; the heartbeat's look at the job's row
//! (every third of the lease TTL) is the fallback for when Redis pub/sub is down or an event was missed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use domain::ports::{JobQueue, Lease};
use domain::usecases::pipeline::{run_build, BuildOutcome};
use domain::JobStatus;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::cancels::CancelWatch;
use crate::worker::{WorkerDeps, WorkerSettings};

/// Builds the leased job and finishes its lease. Never fails: every error is logged here, once.
pub(crate) async fn run_leased(
    deps: &WorkerDeps,
    settings: &WorkerSettings,
    lease: Lease,
    cancel: CancellationToken,
    watch: &CancelWatch,
) {
    let span = tracing::info_span!(
        "job",
        job_id = %lease.job.job_id,
        user_id = %lease.job.user_id,
        project_id = %lease.job.project_id,
        tier = %lease.job.tier,
        worker_id = %lease.worker_id,
    );
    async {
        tracing::info!("build leased");
        // Before the build's first move, so a cancel that lands after it is routed here.
        let _watched = watch.register(lease.job.job_id, cancel.clone());
        let lease_lost = AtomicBool::new(false);
        let heartbeat_done = CancellationToken::new();
        let build = async {
            let outcome = run_build(
                &deps.pipeline,
                &settings.pipeline,
                lease.job.job_id,
                cancel.clone(),
            )
            .await;
            heartbeat_done.cancel();
            outcome
        };
        let beat = heartbeat(
            deps,
            &lease,
            settings.lease_ttl,
            &cancel,
            &heartbeat_done,
            &lease_lost,
        );
        let (outcome, ()) = tokio::join!(build, beat);
        crate::metrics::build_finished(&outcome);
        finish(
            deps.queue.as_ref(),
            &lease,
            &outcome,
            lease_lost.load(Ordering::Relaxed),
        )
        .await;
    }
    .instrument(span)
    .await;
}

/// Every third of the TTL: extend the lease, and look at the job's row. A lost lease (someone reclaimed
/// it) or a job moved to failed (a cancel from the API) stops the build at its next step.
async fn heartbeat(
    deps: &WorkerDeps,
    lease: &Lease,
    ttl: Duration,
    build: &CancellationToken,
    done: &CancellationToken,
    lease_lost: &AtomicBool,
) {
    let every = ttl / 3;
    loop {
        tokio::select! {
            () = done.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match deps.queue.heartbeat(lease, ttl).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("lease lost to the reconciler; stopping the build");
                lease_lost.store(true, Ordering::Relaxed);
                build.cancel();
                return;
            }
            // The lease may still be alive; the next beat tries again.
            Err(error) => tracing::warn!(error = %error, "heartbeat failed"),
        }
        match deps.pipeline.repo.get_job(lease.job.job_id).await {
            Ok(Some(job)) if job.status == JobStatus::Failed => {
                tracing::info!("job cancelled; stopping the build");
                build.cancel();
                return;
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                tracing::warn!("job row vanished; stopping the build");
                build.cancel();
                return;
            }
            Err(error) => tracing::warn!(error = %error, "could not check the job's status"),
        }
    }
}

/// Done with the job (ready, failed, cancelled, not ours): ack. Requeued: release, so another worker
/// picks it up now. Otherwise the lease is left to expire and the reconciler decides.
async fn finish(queue: &dyn JobQueue, lease: &Lease, outcome: &BuildOutcome, lease_lost: bool) {
    match outcome {
        BuildOutcome::Ready { .. }
        | BuildOutcome::Failed { .. }
        | BuildOutcome::Cancelled
        | BuildOutcome::Lost { .. } => ack(queue, lease).await,
        BuildOutcome::Interrupted { requeued: true } if !lease_lost => release(queue, lease).await,
        BuildOutcome::Interrupted { .. } => {
            tracing::warn!(lease_lost, "lease left for the reconciler");
        }
    }
}

pub(crate) async fn ack(queue: &dyn JobQueue, lease: &Lease) {
    if let Err(error) = queue.ack(lease).await {
        tracing::warn!(error = %error, "could not ack the lease; it will expire");
    }
}

pub(crate) async fn release(queue: &dyn JobQueue, lease: &Lease) {
    match queue.release(lease).await {
        Ok(()) => tracing::info!("lease released; the job is back in the queue"),
        Err(error) => tracing::warn!(error = %error, "could not release the lease; it will expire"),
    }
}
