//! Our records follow the provider's truth: a sandbox paused behind our back is recorded paused, and a
//! sandbox no live job owns is killed.

use std::time::Duration;

use chrono::Utc;
use domain::ports::{
    JobRepository, PauseOutcome, ProviderState, SandboxError, SandboxRuntime, SandboxSpec,
    TransitionOutcome, TransitionUpdate,
};
use domain::usecases::reconcile::ReconcileConfig;
use domain::{Job, JobId, JobStatus, PausePolicy, ProjectId, SandboxState, UserId};
use infra_local::e2b_server::FaultConfig;

use crate::harness::{Harness, Provider};
use crate::support::require_node;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_paused_behind_our_back_is_detected() {
    require_node();
    let h = Harness::new(Provider::E2b).await;
    let (job, _) = h.build_ready("user_drift", PausePolicy::Never).await;
    let sandbox = job.sandbox_id.clone().expect("sandbox recorded");
    assert_eq!(job.sandbox_state, SandboxState::Running);
    assert_eq!(h.provider_state(&sandbox).await, Ok(ProviderState::Running));

    // Paused at the provider, not through our code: Postgres still says running.
    assert_eq!(h.runtime.pause(&sandbox).await, Ok(PauseOutcome::Paused));
    assert_eq!(h.job(job.id).await.sandbox_state, SandboxState::Running);

    let reconciler = h.reconciler(ReconcileConfig {
        pause_policy: PausePolicy::Never,
        ..ReconcileConfig::default()
    });
    let report = reconciler.correct_drift(Utc::now()).await.unwrap();
    assert_eq!((report.checked, report.to_paused), (1, 1), "{report:?}");

    let corrected = h.job(job.id).await;
    assert_eq!(corrected.status, JobStatus::Ready);
    assert_eq!(corrected.sandbox_state, SandboxState::Paused);
    assert!(corrected.sandbox_paused());
    assert_eq!(
        h.redis_field(job.id, "sandbox_paused").await.as_deref(),
        Some("true")
    );
    // Idempotent: a second pass finds nothing to correct.
    let again = reconciler.correct_drift(Utc::now()).await.unwrap();
    assert_eq!(again.to_paused + again.to_running + again.to_expired, 0);

    // The reverse: resumed behind our back is recorded running again.
    h.runtime
        .connect(&sandbox, Duration::from_secs(300))
        .await
        .unwrap();
    let report = reconciler.correct_drift(Utc::now()).await.unwrap();
    assert_eq!(report.to_running, 1, "{report:?}");
    let running = h.job(job.id).await;
    assert_eq!(running.sandbox_state, SandboxState::Running);
    assert!(!running.sandbox_paused());

    // Gone at the provider: expired, and never paused.
    h.server()
        .set_faults(&FaultConfig {
            not_found_sandboxes: vec![sandbox.to_string()],
            ..FaultConfig::default()
        })
        .await;
    let report = reconciler.correct_drift(Utc::now()).await.unwrap();
    assert_eq!(report.to_expired, 1, "{report:?}");
    let gone = h.job(job.id).await;
    assert_eq!(gone.sandbox_state, SandboxState::Expired);
    assert!(!gone.sandbox_paused());
    assert_eq!(
        h.redis_field(job.id, "sandbox_state").await.as_deref(),
        Some("expired")
    );
}

fn spec(job_id: JobId, user: &UserId) -> SandboxSpec {
    SandboxSpec {
        job_id,
        user_id: user.clone(),
        project_id: ProjectId::new(),
        timeout: Duration::from_secs(300),
        auto_pause: true,
    }
}

/// Fails a queued job, as a cancel does.
async fn fail(h: &Harness, job: &Job) {
    let update = TransitionUpdate {
        message: Some("Cancelled".into()),
        error_message: Some("Cancelled by the user".into()),
        ..TransitionUpdate::default()
    };
    let outcome = h
        .repo
        .transition(job.id, JobStatus::Queued, JobStatus::Failed, update)
        .await
        .unwrap();
    assert!(matches!(outcome, TransitionOutcome::Applied(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaked_sandbox_is_killed() {
    require_node();
    let h = Harness::new(Provider::E2b).await;
    let user = UserId::try_from("user_leaks").unwrap();
    // A READY job's sandbox is needed: it must survive.
    let (ready, _) = h.build_ready("user_leaks", PausePolicy::Never).await;
    let kept = ready.sandbox_id.clone().expect("sandbox recorded");

    // A sandbox whose job does not exist (created with its metadata, then the job never written).
    let orphan = h.runtime.create(&spec(JobId::new(), &user)).await.unwrap();
    // A sandbox whose job failed.
    let failed_job = h.insert_queued("user_leaks").await;
    fail(&h, &failed_job).await;
    let of_failed = h.runtime.create(&spec(failed_job.id, &user)).await.unwrap();
    for id in [&orphan, &of_failed, &kept] {
        assert_eq!(h.provider_state(id).await, Ok(ProviderState::Running));
    }

    let reconciler = h.reconciler(ReconcileConfig::default());
    let report = reconciler.kill_leaks().await.unwrap();
    assert_eq!((report.listed, report.killed), (3, 2), "{report:?}");

    for id in [&orphan, &of_failed] {
        assert!(
            matches!(h.provider_state(id).await, Err(SandboxError::NotFound(_))),
            "{id} killed"
        );
    }
    assert_eq!(h.provider_state(&kept).await, Ok(ProviderState::Running));
    let kept_job = h.job(ready.id).await;
    assert_eq!(kept_job.status, JobStatus::Ready);
    assert_eq!(kept_job.sandbox_state, SandboxState::Running);
    // Idempotent: nothing left to kill.
    let again = reconciler.kill_leaks().await.unwrap();
    assert_eq!((again.listed, again.killed), (1, 0), "{again:?}");
}
