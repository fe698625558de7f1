use chrono::Duration as ChronoDuration;

use super::super::fixtures::{live_accepting, ready_job, reconciler, stateful_repo};
use super::super::ReconcileConfig;
use super::*;
use crate::ports::queue::MockJobQueue;
use crate::ports::repository::MockJobRepository;
use crate::ports::sandbox::MockSandboxRuntime;
use crate::ports::ProviderSandbox;

/// Runs the drift step over one job whose provider side is `there` (`None`: not listed, and `state`
/// answers not found).
async fn drift(j: Job, there: Option<ProviderState>) -> (DriftReport, Vec<SandboxState>) {
    let mut repo = MockJobRepository::new();
    let row = stateful_repo(&mut repo, &j);
    let r = row.clone();
    repo.expect_list_jobs_by_status()
        .withf(|s, _, _| *s == JobStatus::Ready)
        .returning(move |_, _, _| Ok(vec![r.current()]));
    let mut runtime = MockSandboxRuntime::new();
    let listed: Vec<ProviderSandbox> = there
        .map(|state| ProviderSandbox {
            sandbox_id: j.sandbox_id.clone().unwrap(),
            state,
            job_id: Some(j.id),
        })
        .into_iter()
        .collect();
    runtime.expect_list().returning(move || Ok(listed.clone()));
    runtime
        .expect_state()
        .returning(|_| Err(SandboxError::NotFound("no such sandbox".into())));
    let rec = reconciler(
        repo,
        live_accepting(),
        MockJobQueue::new(),
        runtime,
        ReconcileConfig::default(),
    );
    let report = rec.correct_drift(Utc::now()).await.unwrap();
    (report, row.written())
}

#[tokio::test]
async fn a_sandbox_paused_behind_our_back_is_recorded_paused() {
    let (report, written) = drift(
        ready_job(SandboxState::Running),
        Some(ProviderState::Paused),
    )
    .await;
    assert_eq!(report.to_paused, 1);
    assert_eq!(written, vec![SandboxState::Paused]);
}

#[tokio::test]
async fn a_sandbox_running_while_we_say_paused_is_recorded_running() {
    let (report, written) = drift(
        ready_job(SandboxState::Paused),
        Some(ProviderState::Running),
    )
    .await;
    assert_eq!(report.to_running, 1);
    assert_eq!(written, vec![SandboxState::Running]);
}

#[tokio::test]
async fn a_sandbox_the_provider_no_longer_has_becomes_expired() {
    let (report, written) = drift(ready_job(SandboxState::Paused), None).await;
    assert_eq!(report.to_expired, 1);
    assert_eq!(written, vec![SandboxState::Expired]);
}

#[tokio::test]
async fn agreement_and_fresh_transitions_are_left_alone_and_stale_ones_settled() {
    let (report, written) =
        drift(ready_job(SandboxState::Paused), Some(ProviderState::Paused)).await;
    assert_eq!(
        report,
        DriftReport {
            checked: 1,
            ..DriftReport::default()
        }
    );
    assert!(written.is_empty());

    let mut fresh = ready_job(SandboxState::Resuming);
    fresh.updated_at = Utc::now();
    let (_, written) = drift(fresh, Some(ProviderState::Running)).await;
    assert!(written.is_empty());

    let mut stale = ready_job(SandboxState::Resuming);
    stale.updated_at = Utc::now() - ChronoDuration::minutes(30);
    let (report, written) = drift(stale, Some(ProviderState::Running)).await;
    assert_eq!(report.stale_settled, 1);
    assert_eq!(written, vec![SandboxState::Running]);
}
