//! Moving jobs along as a worker would (through the same ports), so routes can be tested at each stage.

use chrono::Utc;

use domain::ports::{SandboxStateUpdate, TransitionOutcome, TransitionUpdate};
use domain::{Job, JobEvent, JobId, JobStatus, SandboxId, SandboxState};

use crate::helpers::TestApp;

/// Moves the job one step and mirrors it to Redis with its event, as the pipeline does.
pub async fn advance(app: &TestApp, id: JobId, to: JobStatus, update: TransitionUpdate) -> Job {
    let from = app.job_row(id).await.status;
    let message = update.message.clone().unwrap_or_default();
    let outcome = app
        .state
        .repo
        .transition(id, from, to, update)
        .await
        .expect("transition");
    let TransitionOutcome::Applied(job) = outcome else {
        panic!("transition {from} -> {to} conflicted");
    };
    let event = JobEvent {
        job_id: id,
        status: to,
        message,
        preview_url: job.preview_url.clone(),
        timestamp: Utc::now(),
    };
    app.state
        .live
        .save_and_publish(&job, &event)
        .await
        .expect("save and publish");
    *job
}

/// Walks a queued job through every stage to READY with a running sandbox and a preview URL.
pub async fn make_ready(app: &TestApp, id: JobId, preview_url: &str) -> Job {
    advance(app, id, JobStatus::Starting, TransitionUpdate::default()).await;
    let sandbox = SandboxId::try_from("sbx-test-1").expect("sandbox id");
    app.state
        .repo
        .record_sandbox(id, &sandbox, 1)
        .await
        .expect("record sandbox");
    for status in [
        JobStatus::Scaffold,
        JobStatus::Code,
        JobStatus::Deps,
        JobStatus::Checks,
    ] {
        advance(app, id, status, TransitionUpdate::default()).await;
    }
    advance(
        app,
        id,
        JobStatus::Ready,
        TransitionUpdate {
            message: Some("Job completed successfully".into()),
            preview_url: Some(preview_url.to_owned()),
            assign_build_version: true,
            sandbox_state: Some(SandboxState::Running),
            sandbox_expires_at: Some(ready_expiry()),
            ..TransitionUpdate::default()
        },
    )
    .await
}

/// The fixed `sandbox_expires_at` [`make_ready`] records, as the pipeline's create would.
pub fn ready_expiry() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(4_102_444_800, 0).expect("2100-01-01")
}

/// Records the job's sandbox as paused (Postgres, then the hash).
pub async fn pause(app: &TestApp, id: JobId) -> Job {
    set_sandbox(app, id, SandboxState::Paused).await
}

/// Records the job's sandbox in `state` (Postgres, then the hash), as the worker's pause does.
pub async fn set_sandbox(app: &TestApp, id: JobId, state: SandboxState) -> Job {
    let job = app.job_row(id).await;
    let paused = app
        .state
        .repo
        .set_sandbox_state(
            id,
            SandboxStateUpdate {
                expected_version: job.sandbox_state_version,
                state,
                preview_url: None,
                expires_at: None,
            },
        )
        .await
        .expect("set sandbox state")
        .expect("version matched");
    app.state.live.save(&paused).await.expect("save");
    paused
}
