//! A worker killed in the middle of a build: its lease expires, the reconciler kills the old sandbox and
//! requeues the job (which is then rebuilt), or fails it once the attempts are used up.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use domain::ports::{JobQueue, SandboxError};
use domain::usecases::pipeline::run_build;
use domain::usecases::reconcile::{LeaseReport, ReconcileConfig, Reconciler};
use domain::{Job, JobId, JobStatus, PausePolicy, SandboxId, SandboxState};
use tokio_util::sync::CancellationToken;

use crate::fakes::BlockingGenerator;
use crate::harness::{stop_workers, Harness, Provider, WAIT};
use crate::support::{eventually, require_node};

const LEASE_TTL: Duration = Duration::from_secs(1);

/// Leases the next job as worker "doomed" and builds it (leaving the queue counts the attempt) with a generator that never
/// answers; once the sandbox is recorded and the build is stuck in `code`, the task is aborted: the
/// process died, nothing was released and no heartbeat will come. Returns the job and its old sandbox.
async fn build_and_die(h: &Harness, id: JobId) -> (Job, SandboxId) {
    let lease = h
        .queue
        .lease("doomed", LEASE_TTL)
        .await
        .unwrap()
        .expect("a job to lease");
    assert_eq!(lease.job.job_id, id);

    let generator = Arc::new(BlockingGenerator::default());
    let deps = h.pipeline(generator.clone());
    let build = tokio::spawn(async move {
        run_build(
            &deps,
            &Harness::pipeline_config(PausePolicy::Immediate),
            id,
            CancellationToken::new(),
        )
        .await
    });
    let job = eventually(WAIT, "the build is stuck in code", || async {
        let job = h.job(id).await;
        (job.status == JobStatus::Code
            && job.sandbox_id.is_some()
            && generator.calls.load(Ordering::SeqCst) == 1)
            .then_some(job)
    })
    .await;
    build.abort();
    assert!(build.await.unwrap_err().is_cancelled());
    let sandbox = job.sandbox_id.clone().unwrap();
    assert!(
        h.provider_state(&sandbox).await.is_ok(),
        "the old sandbox lives on"
    );
    (job, sandbox)
}

/// Runs the lease step until it has reclaimed the expired lease.
async fn recover(reconciler: &Reconciler) -> LeaseReport {
    eventually(WAIT, "the expired lease is reclaimed", || async {
        let report = reconciler.recover_expired_leases(Utc::now()).await.unwrap();
        (report.reclaimed > 0).then_some(report)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_whose_worker_died_is_requeued_with_its_old_sandbox_killed_and_rebuilt() {
    require_node();
    let h = Harness::new(Provider::Local).await;
    let id = h.submit("user_crash").await;
    let (_, old_sandbox) = build_and_die(&h, id).await;

    let reconciler = h.reconciler(ReconcileConfig::default());
    let report = recover(&reconciler).await;
    assert_eq!(
        (report.requeued, report.failed, report.sandboxes_killed),
        (1, 0, 1),
        "{report:?}"
    );

    let job = h.job(id).await;
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.sandbox_id, None);
    assert_eq!(job.attempts, 1);
    assert!(h.queue.contains(id).await.unwrap(), "back in the queue");
    assert_eq!(h.queue.pending_len().await.unwrap(), 1);
    assert_eq!(h.redis_field(id, "status").await.as_deref(), Some("queued"));
    assert!(matches!(
        h.provider_state(&old_sandbox).await,
        Err(SandboxError::NotFound(_))
    ));
    // Idempotent: the lease is gone, nothing more to do.
    let again = reconciler.recover_expired_leases(Utc::now()).await.unwrap();
    assert_eq!(again, LeaseReport::default());

    // A healthy worker rebuilds it in a new sandbox.
    let shutdown = CancellationToken::new();
    let worker = h.start_worker("healthy", Duration::from_secs(10), &shutdown);
    let rebuilt = eventually(WAIT, "the job rebuilt to READY and paused", || async {
        let job = h.job(id).await;
        assert_ne!(job.status, JobStatus::Failed, "{:?}", job.error_message);
        (job.status == JobStatus::Ready && job.sandbox_paused()).then_some(job)
    })
    .await;
    stop_workers(shutdown, vec![worker]).await;
    assert_eq!(rebuilt.attempts, 2);
    assert_ne!(rebuilt.sandbox_id.as_ref(), Some(&old_sandbox));
    assert!(!h.queue.contains(id).await.unwrap(), "lease acked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_whose_worker_died_at_the_last_attempt_fails_with_its_old_sandbox_killed() {
    let h = Harness::new(Provider::Local).await;
    let id = h.submit("user_crash").await;
    let (_, old_sandbox) = build_and_die(&h, id).await;

    let reconciler = h.reconciler(ReconcileConfig {
        max_build_attempts: 1,
        ..ReconcileConfig::default()
    });
    let report = recover(&reconciler).await;
    assert_eq!(
        (report.requeued, report.failed, report.sandboxes_killed),
        (0, 1, 1),
        "{report:?}"
    );

    let job = h.job(id).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(
        job.error_message.as_deref(),
        Some("Build worker lost after 1 attempt")
    );
    assert!(job.debug_id.is_some());
    assert_eq!(job.sandbox_id.as_ref(), Some(&old_sandbox));
    assert_eq!(job.sandbox_state, SandboxState::Killed);
    assert!(!h.queue.contains(id).await.unwrap());
    assert_eq!(h.redis_field(id, "status").await.as_deref(), Some("failed"));
    assert!(matches!(
        h.provider_state(&old_sandbox).await,
        Err(SandboxError::NotFound(_))
    ));
}
