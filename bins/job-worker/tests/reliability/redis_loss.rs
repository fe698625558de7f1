//! Redis is rebuildable: losing every key in the middle of work loses no job.

use std::sync::Arc;
use std::time::Duration;

use domain::ports::{JobQueue, LiveJobStore, SandboxError};
use domain::usecases::reconcile::{ReconcileConfig, StepRun};
use domain::{JobStatus, SandboxState};
use infra_redis::RedisStepLock;
use tokio_util::sync::CancellationToken;

use crate::fakes::GatedGenerator;
use crate::harness::{stop_workers, Harness, Provider, WAIT};
use crate::support::{eventually, require_node};

const JOBS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_redis_in_the_middle_of_work_loses_no_job() {
    require_node();
    let h = Harness::new(Provider::Local).await;
    let mut jobs = Vec::new();
    for n in 0..JOBS {
        jobs.push(h.submit(&format!("user_{n}")).await);
    }
    assert_eq!(h.queue.pending_len().await.unwrap(), JOBS);

    // The whole live side is gone: queue, hashes, counters.
    h.lose_redis().await;
    assert_eq!(h.queue.pending_len().await.unwrap(), 0);
    for &id in &jobs {
        assert!(!h.queue.contains(id).await.unwrap());
        assert_eq!(h.live.get(id).await.unwrap(), None);
    }

    let reconciler = h.reconciler(ReconcileConfig::default());
    let report = reconciler.rebuild_redis().await.unwrap();
    assert_eq!(
        (report.requeued, report.hashes_rebuilt, report.errors),
        (JOBS, JOBS, 0),
        "{report:?}"
    );
    assert_eq!(h.queue.pending_len().await.unwrap(), JOBS);
    for &id in &jobs {
        assert!(
            h.queue.contains(id).await.unwrap(),
            "{id} back in the queue"
        );
        let live = h.live.get(id).await.unwrap().expect("hash rebuilt");
        assert_eq!(live.status, JobStatus::Queued);
        assert_eq!(live, h.job(id).await, "the hash is the row");
    }
    // Idempotent: a whole pass under the Redis step locks (which were lost too) restores nothing more.
    let lock = RedisStepLock::new(h.redis.client.clone(), h.redis.prefix.clone());
    let pass = reconciler.run_once(&lock).await;
    match pass.rebuild {
        StepRun::Done { report, .. } => {
            assert_eq!(
                (report.requeued, report.hashes_rebuilt),
                (0, 0),
                "{report:?}"
            )
        }
        other => panic!("the rebuild step did not run: {other:?}"),
    }
    assert_eq!(h.queue.pending_len().await.unwrap(), JOBS);

    let shutdown = CancellationToken::new();
    let worker = h.start_worker("after-the-flush", Duration::from_secs(10), &shutdown);
    for &id in &jobs {
        eventually(WAIT, "every job READY and paused", || async {
            let job = h.job(id).await;
            assert_ne!(job.status, JobStatus::Failed, "{:?}", job.error_message);
            (job.status == JobStatus::Ready && job.sandbox_paused()).then_some(())
        })
        .await;
    }
    stop_workers(shutdown, vec![worker]).await;

    for &id in &jobs {
        let job = h.job(id).await;
        assert_eq!(job.attempts, 1, "built once");
        assert_eq!(job.sandbox_state, SandboxState::Paused);
        let live = h.live.get(id).await.unwrap().expect("live hash");
        assert_eq!(live.status, JobStatus::Ready);
        assert!(live.sandbox_paused());
    }
    assert_eq!(h.queue.pending_len().await.unwrap(), 0);
}

/// The flush hits running builds: their leases vanish, the workers notice at the next heartbeat, kill
/// their sandboxes and put the jobs back in Postgres; the rebuild puts them back in the queue and they
/// are built again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_redis_during_builds_loses_no_job() {
    require_node();
    let h = Harness::new(Provider::Local).await;
    let jobs = [h.submit("user_a").await, h.submit("user_b").await];
    let generator = Arc::new(GatedGenerator::closed());
    let shutdown = CancellationToken::new();
    let worker = h.start_worker_with(
        "flushed",
        generator.clone(),
        Duration::from_millis(1500),
        &shutdown,
    );
    let mut first_sandboxes = Vec::new();
    for &id in &jobs {
        let job = eventually(WAIT, "both builds wait in code", || async {
            let job = h.job(id).await;
            (job.status == JobStatus::Code && job.sandbox_id.is_some()).then_some(job)
        })
        .await;
        first_sandboxes.push(job.sandbox_id.unwrap());
    }

    h.lose_redis().await;
    for &id in &jobs {
        eventually(
            WAIT,
            "the worker gives the job back to Postgres",
            || async { (h.job(id).await.status == JobStatus::Queued).then_some(()) },
        )
        .await;
    }
    for sandbox in &first_sandboxes {
        assert!(matches!(
            h.provider_state(sandbox).await,
            Err(SandboxError::NotFound(_))
        ));
    }
    // Queued in Postgres only: the worker cannot see them until the queue is rebuilt.
    assert_eq!(h.queue.pending_len().await.unwrap(), 0);

    generator.open();
    let reconciler = h.reconciler(ReconcileConfig::default());
    let report = reconciler.rebuild_redis().await.unwrap();
    assert_eq!(report.requeued, jobs.len(), "{report:?}");
    for &id in &jobs {
        let job = eventually(WAIT, "every job READY and paused", || async {
            let job = h.job(id).await;
            assert_ne!(job.status, JobStatus::Failed, "{:?}", job.error_message);
            (job.status == JobStatus::Ready && job.sandbox_paused()).then_some(job)
        })
        .await;
        assert_eq!(job.attempts, 2);
        assert!(!first_sandboxes.contains(job.sandbox_id.as_ref().unwrap()));
        let live = h.live.get(id).await.unwrap().expect("live hash");
        assert_eq!(live.status, JobStatus::Ready);
    }
    stop_workers(shutdown, vec![worker]).await;
    assert_eq!(h.queue.pending_len().await.unwrap(), 0);
}
