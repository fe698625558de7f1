use super::fixtures::{live_accepting, reconciler};
use super::*;
use crate::ports::lock::MockStepLock;
use crate::ports::queue::MockJobQueue;
use crate::ports::repository::MockJobRepository;
use crate::ports::sandbox::MockSandboxRuntime;
use crate::ports::LockGuardToken;

fn idle_deps() -> Reconciler {
    let mut repo = MockJobRepository::new();
    repo.expect_list_jobs_by_status()
        .returning(|_, _, _| Ok(vec![]));
    repo.expect_jobs_needing_attention()
        .returning(|_, _| Ok(vec![]));
    let mut queue = MockJobQueue::new();
    queue.expect_expired_leases().returning(|_| Ok(vec![]));
    let mut runtime = MockSandboxRuntime::new();
    runtime.expect_list().returning(|| Ok(vec![]));
    reconciler(
        repo,
        live_accepting(),
        queue,
        runtime,
        ReconcileConfig::default(),
    )
}

#[tokio::test]
async fn every_step_runs_under_its_own_lock_and_releases_it() {
    let lock = LocalStepLock::new();
    let report = idle_deps().run_once(&lock).await;
    assert!(matches!(report.leases, StepRun::Done { .. }));
    assert!(matches!(report.rebuild, StepRun::Done { .. }));
    assert!(matches!(report.promote, StepRun::Done { .. }));
    assert!(matches!(report.drift, StepRun::Done { .. }));
    assert!(matches!(report.leaks, StepRun::Done { .. }));
    assert!(matches!(report.failed_pauses, StepRun::Done { .. }));
    assert!(matches!(report.idle, StepRun::Done { .. }));
    // Released: a second run takes every lock again.
    let again = idle_deps().run_once(&lock).await;
    assert!(matches!(again.idle, StepRun::Done { .. }));
}

#[tokio::test]
async fn a_step_locked_elsewhere_is_skipped_without_touching_anything() {
    let mut lock = MockStepLock::new();
    lock.expect_try_lock()
        .withf(|name, _| name == "reconcile:leaks")
        .returning(|_, _| Ok(None));
    lock.expect_try_lock().returning(|name, _| {
        Ok(Some(LockGuardToken {
            name: name.to_owned(),
            token: "t".into(),
        }))
    });
    lock.expect_unlock().times(6).returning(|_| Ok(()));
    let report = idle_deps().run_once(&lock).await;
    assert_eq!(report.leaks, StepRun::Skipped);
    assert!(matches!(report.drift, StepRun::Done { .. }));
}

#[tokio::test]
async fn a_failing_step_does_not_stop_the_others() {
    let mut repo = MockJobRepository::new();
    repo.expect_list_jobs_by_status()
        .returning(|_, _, _| Ok(vec![]));
    repo.expect_jobs_needing_attention()
        .returning(|_, _| Ok(vec![]));
    let mut queue = MockJobQueue::new();
    queue
        .expect_expired_leases()
        .returning(|_| Err(QueueError::Unavailable("redis down".into())));
    let mut runtime = MockSandboxRuntime::new();
    runtime.expect_list().returning(|| Ok(vec![]));
    let rec = reconciler(
        repo,
        live_accepting(),
        queue,
        runtime,
        ReconcileConfig::default(),
    );
    let report = rec.run_once(&LocalStepLock::new()).await;
    assert!(matches!(
        report.leases,
        StepRun::Failed {
            error: ReconcileError::Queue(_),
            ..
        }
    ));
    assert!(matches!(report.idle, StepRun::Done { .. }));
}
