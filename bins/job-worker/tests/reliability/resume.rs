//! Resume: concurrent calls share one resume; a sandbox the provider no longer has is `sandbox_expired`.

use std::sync::atomic::Ordering;

use domain::ports::{PreviewProbe, ProviderState};
use domain::usecases::pipeline::BuildOutcome;
use domain::usecases::resume::ResumeError;
use domain::{JobStatus, PausePolicy, SandboxState, UserId};
use infra_e2b::HttpPreviewProbe;
use infra_local::e2b_server::FaultConfig;

use crate::harness::{Harness, Provider};
use crate::support::require_node;

const PAUSED: BuildOutcome = BuildOutcome::Ready {
    paused: true,
    pause_failed: false,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_resumes_share_one() {
    concurrent_resumes_share_one_on(Provider::Local).await;
}

/// The same through the E2B client, the server's preview proxy and its pause/connect endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_resumes_share_one_through_the_e2b_client() {
    concurrent_resumes_share_one_on(Provider::E2b).await;
}

async fn concurrent_resumes_share_one_on(provider: Provider) {
    require_node();
    let h = Harness::new(provider).await;
    let (job, outcome) = h.build_ready("user_resume", PausePolicy::Immediate).await;
    assert_eq!(outcome, PAUSED);
    let sandbox = job.sandbox_id.clone().unwrap();
    assert_eq!(h.provider_state(&sandbox).await, Ok(ProviderState::Paused));
    let connects_before = h.runtime.connects.load(Ordering::SeqCst);

    let service = h.resume_service();
    let user = UserId::try_from("user_resume").unwrap();
    let (a, b) = tokio::join!(service.resume(&user, job.id), service.resume(&user, job.id));
    let (a, b) = (a.expect("first resume"), b.expect("second resume"));
    assert_eq!(a, b);
    assert_eq!(a.sandbox_id, sandbox);
    assert_eq!(
        h.runtime.connects.load(Ordering::SeqCst) - connects_before,
        1,
        "one resume reached the provider"
    );

    let probe = HttpPreviewProbe::new().unwrap();
    assert_eq!(probe.get(&a.preview_url).await.unwrap().status, 200);
    assert_eq!(h.provider_state(&sandbox).await, Ok(ProviderState::Running));
    let resumed = h.job(job.id).await;
    assert_eq!(resumed.status, JobStatus::Ready);
    assert_eq!(resumed.sandbox_state, SandboxState::Running);
    assert!(!resumed.sandbox_paused());
    assert!(resumed.resumed_at.is_some());
    assert_eq!(resumed.preview_url.as_deref(), Some(a.preview_url.as_str()));
    assert_eq!(
        h.redis_field(job.id, "sandbox_paused").await.as_deref(),
        Some("false")
    );

    // A resume of the running sandbox answers at once, without the provider.
    let again = service.resume(&user, job.id).await.unwrap();
    assert_eq!(again, a);
    assert_eq!(
        h.runtime.connects.load(Ordering::SeqCst) - connects_before,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_an_expired_sandbox_is_sandbox_expired_and_marks_it_expired() {
    require_node();
    let h = Harness::new(Provider::E2b).await;
    let (job, outcome) = h.build_ready("user_expired", PausePolicy::Immediate).await;
    assert_eq!(outcome, PAUSED);
    let sandbox = job.sandbox_id.clone().unwrap();
    h.server()
        .set_faults(&FaultConfig {
            not_found_sandboxes: vec![sandbox.to_string()],
            ..FaultConfig::default()
        })
        .await;

    let user = UserId::try_from("user_expired").unwrap();
    let error = h
        .resume_service()
        .resume(&user, job.id)
        .await
        .expect_err("the provider no longer has it");
    assert!(matches!(error, ResumeError::Expired { .. }), "{error:?}");
    assert_eq!(error.error_type(), Some("sandbox_expired"));

    let expired = h.job(job.id).await;
    assert_eq!(expired.status, JobStatus::Ready);
    assert_eq!(expired.sandbox_state, SandboxState::Expired);
    assert!(!expired.sandbox_paused());
    assert_eq!(
        h.redis_field(job.id, "sandbox_state").await.as_deref(),
        Some("expired")
    );
    assert_eq!(
        h.redis_field(job.id, "sandbox_paused").await.as_deref(),
        Some("false")
    );
    // A second call answers the same from the recorded state.
    let again = h.resume_service().resume(&user, job.id).await.unwrap_err();
    assert_eq!(again.error_type(), Some("sandbox_expired"));
}
