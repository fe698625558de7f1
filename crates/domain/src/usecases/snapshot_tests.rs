use std::sync::Arc;

use super::*;
use crate::ports::live_store::MockLiveJobStore;
use crate::ports::repository::MockJobRepository;
use crate::ports::sandbox::MockSandboxRuntime;
use crate::ports::PauseOutcome;
use crate::usecases::reconcile::fixtures::{job, ready_job, stateful_repo, user};

fn service(
    repo: MockJobRepository,
    live: MockLiveJobStore,
    runtime: MockSandboxRuntime,
) -> SnapshotService {
    SnapshotService::new(
        SnapshotDeps {
            repo: Arc::new(repo),
            live: Arc::new(live),
            runtime: Arc::new(runtime),
        },
        SnapshotConfig::default(),
    )
}

fn live_saving() -> MockLiveJobStore {
    let mut live = MockLiveJobStore::new();
    live.expect_save().returning(|_| Ok(()));
    live
}

#[tokio::test]
async fn a_paused_sandbox_answers_paused_without_any_provider_call() {
    let j = ready_job(SandboxState::Paused);
    let mut repo = MockJobRepository::new();
    let row = stateful_repo(&mut repo, &j);
    // No expectation on the runtime: any call (connect, pause) would panic.
    let got = service(repo, MockLiveJobStore::new(), MockSandboxRuntime::new())
        .snapshot(&user(), j.id)
        .await;
    assert_eq!(got, Ok(SnapshotResult { paused: true }));
    assert!(row.written().is_empty());
}

#[tokio::test]
async fn a_running_sandbox_is_paused_and_recorded_after_the_provider_confirms() {
    let j = ready_job(SandboxState::Running);
    let mut repo = MockJobRepository::new();
    let row = stateful_repo(&mut repo, &j);
    let mut runtime = MockSandboxRuntime::new();
    let r = row.clone();
    runtime.expect_pause().times(1).returning(move |_| {
        // The claim is written before the provider is asked.
        assert_eq!(r.written(), vec![SandboxState::Pausing]);
        Ok(PauseOutcome::Paused)
    });
    let mut live = MockLiveJobStore::new();
    live.expect_save()
        .withf(|j| j.sandbox_state == SandboxState::Paused && j.sandbox_paused())
        .times(1)
        .returning(|_| Ok(()));
    let got = service(repo, live, runtime).snapshot(&user(), j.id).await;
    assert_eq!(got, Ok(SnapshotResult { paused: true }));
    assert_eq!(
        row.written(),
        vec![SandboxState::Pausing, SandboxState::Paused]
    );
}

#[tokio::test]
async fn a_refused_pause_reports_failure_and_puts_the_state_back_to_running() {
    let j = ready_job(SandboxState::Running);
    let mut repo = MockJobRepository::new();
    let row = stateful_repo(&mut repo, &j);
    let mut runtime = MockSandboxRuntime::new();
    runtime
        .expect_pause()
        .times(1)
        .returning(|_| Err(SandboxError::Unavailable("hobby tier".into())));
    let got = service(repo, live_saving(), runtime)
        .snapshot(&user(), j.id)
        .await;
    assert!(matches!(got, Err(SnapshotError::PauseFailed(_))), "{got:?}");
    assert_eq!(
        row.written(),
        vec![SandboxState::Pausing, SandboxState::Running]
    );
    assert!(!row.current().sandbox_paused());
}

#[tokio::test]
async fn a_sandbox_the_provider_lost_becomes_expired() {
    let j = ready_job(SandboxState::Running);
    let mut repo = MockJobRepository::new();
    let row = stateful_repo(&mut repo, &j);
    let mut runtime = MockSandboxRuntime::new();
    runtime
        .expect_pause()
        .returning(|_| Err(SandboxError::NotFound("gone".into())));
    let got = service(repo, live_saving(), runtime)
        .snapshot(&user(), j.id)
        .await;
    assert_eq!(got, Err(SnapshotError::Expired));
    assert_eq!(
        row.written(),
        vec![SandboxState::Pausing, SandboxState::Expired]
    );
}

#[tokio::test]
async fn only_ready_jobs_can_be_snapshotted() {
    let j = job(JobStatus::Deps);
    let mut repo = MockJobRepository::new();
    stateful_repo(&mut repo, &j);
    let got = service(repo, MockLiveJobStore::new(), MockSandboxRuntime::new())
        .snapshot(&user(), j.id)
        .await;
    assert_eq!(got, Err(SnapshotError::NotReady(JobStatus::Deps)));
}

#[tokio::test(start_paused = true)]
async fn waits_for_a_pause_in_flight_elsewhere_then_answers_what_it_became() {
    let j = ready_job(SandboxState::Pausing);
    let mut repo = MockJobRepository::new();
    let row = stateful_repo(&mut repo, &j);
    let r = row.clone();
    // Another process finishes its pause a little later.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut cur = r.job.lock().unwrap();
        cur.sandbox_state = SandboxState::Paused;
        cur.sandbox_state_version += 1;
    });
    let got = service(repo, MockLiveJobStore::new(), MockSandboxRuntime::new())
        .snapshot(&user(), j.id)
        .await;
    assert_eq!(got, Ok(SnapshotResult { paused: true }));
}
