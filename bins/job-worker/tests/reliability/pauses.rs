//! A pause the provider refused is retried by the reconciler, with backoff, until it succeeds.

use std::time::Duration;

use chrono::Utc;
use domain::ports::ProviderState;
use domain::usecases::pipeline::BuildOutcome;
use domain::usecases::reconcile::ReconcileConfig;
use domain::{JobStatus, PausePolicy, SandboxState};
use infra_local::e2b_server::FaultConfig;

use crate::harness::{Harness, Provider, WAIT};
use crate::support::{eventually, require_node};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_pause_is_retried_until_it_succeeds() {
    require_node();
    let h = Harness::new(Provider::E2b).await;
    let always_fail = FaultConfig {
        pause_fail_ratio: 1.0,
        ..FaultConfig::default()
    };
    h.server().set_faults(&always_fail).await;

    let (job, outcome) = h.build_ready("user_pause", PausePolicy::Immediate).await;
    assert_eq!(
        outcome,
        BuildOutcome::Ready {
            paused: false,
            pause_failed: true
        }
    );
    let sandbox = job.sandbox_id.clone().expect("sandbox recorded");
    assert_eq!(job.sandbox_state, SandboxState::Running);
    assert!(!job.sandbox_paused());
    assert_eq!(
        h.redis_field(job.id, "sandbox_paused").await.as_deref(),
        Some("false")
    );
    assert_eq!(h.provider_state(&sandbox).await, Ok(ProviderState::Running));

    let reconciler = h.reconciler(ReconcileConfig {
        pause_backoff_base: Duration::from_secs(1),
        pause_backoff_max: Duration::from_secs(2),
        max_pause_attempts: 2,
        ..ReconcileConfig::default()
    });
    // Past the grace the pipeline's own pause gets, and past any activity window.
    let later = || Utc::now() + chrono::Duration::minutes(30);

    // While the provider keeps refusing, each retry fails and the job stays READY and running.
    let report = reconciler.retry_failed_pauses(later()).await.unwrap();
    assert_eq!((report.due, report.failed, report.paused), (1, 1, 0));
    // Right after a failure the job backs off instead of hammering the provider.
    let report = reconciler.retry_failed_pauses(later()).await.unwrap();
    assert_eq!((report.backing_off, report.paused), (1, 0), "{report:?}");
    let job_now = h.job(job.id).await;
    assert_eq!(job_now.status, JobStatus::Ready);
    assert_eq!(job_now.sandbox_state, SandboxState::Running);
    assert!(!job_now.sandbox_paused());

    // Once the backoff has passed it is tried again; the second failure in a row gives up: pause_failed
    // is recorded (the alert), and the retries go on.
    let report = eventually(WAIT, "the second retry", || async {
        let report = reconciler.retry_failed_pauses(later()).await.unwrap();
        (report.failed == 1).then_some(report)
    })
    .await;
    assert_eq!(report.gave_up, 1, "{report:?}");
    let gave_up = h.job(job.id).await;
    assert_eq!(gave_up.status, JobStatus::Ready);
    assert_eq!(gave_up.sandbox_state, SandboxState::PauseFailed);
    assert!(!gave_up.sandbox_paused());
    assert_eq!(
        h.redis_field(job.id, "sandbox_state").await.as_deref(),
        Some("pause_failed")
    );
    assert_eq!(h.provider_state(&sandbox).await, Ok(ProviderState::Running));

    h.server().set_faults(&FaultConfig::default()).await;
    eventually(WAIT, "a retry pauses the sandbox", || async {
        let report = reconciler.retry_failed_pauses(later()).await.unwrap();
        (report.paused == 1).then_some(())
    })
    .await;

    let paused = h.job(job.id).await;
    assert_eq!(paused.status, JobStatus::Ready);
    assert_eq!(paused.sandbox_state, SandboxState::Paused);
    assert!(paused.sandbox_paused());
    assert!(paused.paused_at.is_some());
    assert_eq!(
        h.redis_field(job.id, "sandbox_paused").await.as_deref(),
        Some("true")
    );
    assert_eq!(
        h.redis_field(job.id, "sandbox_state").await.as_deref(),
        Some("paused")
    );
    assert_eq!(h.provider_state(&sandbox).await, Ok(ProviderState::Paused));
    // Nothing is left to retry.
    let report = reconciler.retry_failed_pauses(later()).await.unwrap();
    assert_eq!(report.due, 0, "{report:?}");
}
