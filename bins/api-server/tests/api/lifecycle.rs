//! `/api/generation/{job_id}/resume` and `/snapshot`.

use serde_json::{json, Value};

use domain::ports::sandbox::MockSandboxRuntime;
use domain::ports::{PauseOutcome, SandboxError};
use domain::SandboxState;

use crate::helpers::{error_detail, spawn_app, spawn_app_with, AppOptions};
use crate::support::{make_ready, pause};

const ALICE: &str = "user_alice";
const PREVIEW: &str = "https://3000-sbx.example";

#[tokio::test]
async fn resume_of_a_paused_sandbox_answers_its_preview() {
    let mut sandbox = MockSandboxRuntime::new();
    sandbox.expect_connect().times(1).returning(|_, _| Ok(()));
    sandbox.expect_set_timeout().returning(|_, _| Ok(()));
    let app = spawn_app_with(AppOptions {
        sandbox,
        ..AppOptions::default()
    })
    .await;
    let id = app.start_job(ALICE).await;
    make_ready(&app, id, PREVIEW).await;
    pause(&app, id).await;
    // Paused: nothing bills after READY.
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("slipway_ready_sandboxes_unpaused 0"),
        "{metrics}"
    );
    let resp = app
        .post_empty(&format!("/api/generation/{id}/resume"), ALICE)
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"preview_url": PREVIEW, "sandbox_id": "sbx-test-1"})
    );
    assert_eq!(app.job_row(id).await.sandbox_state, SandboxState::Running);
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains(r#"slipway_resume_seconds_count{outcome="resumed"}"#),
        "{metrics}"
    );
    // Running again: one READY sandbox that may be billing.
    assert!(
        metrics.contains("slipway_ready_sandboxes_unpaused 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn resume_of_an_expired_sandbox_is_503_sandbox_expired() {
    let mut sandbox = MockSandboxRuntime::new();
    sandbox
        .expect_connect()
        .returning(|_, _| Err(SandboxError::NotFound("gone".into())));
    let app = spawn_app_with(AppOptions {
        sandbox,
        ..AppOptions::default()
    })
    .await;
    let id = app.start_job(ALICE).await;
    make_ready(&app, id, PREVIEW).await;
    pause(&app, id).await;
    let resp = app
        .post_empty(&format!("/api/generation/{id}/resume"), ALICE)
        .await;
    let detail = error_detail(resp, 503).await;
    assert_eq!(detail["error_type"], "sandbox_expired");
    assert!(detail["message"].is_string());
    assert_eq!(app.job_row(id).await.sandbox_state, SandboxState::Expired);
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains(r#"slipway_resume_seconds_count{outcome="sandbox_expired"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn resume_and_snapshot_refuse_missing_foreign_and_unbuilt_jobs() {
    let app = spawn_app().await;
    let id = app.start_job(ALICE).await;
    for action in ["resume", "snapshot"] {
        let url = format!("/api/generation/{id}/{action}");
        assert_eq!(
            error_detail(app.post_empty(&url, "user_bob").await, 404).await,
            "Job not found"
        );
    }
    let resp = app
        .post_empty(&format!("/api/generation/{id}/resume"), ALICE)
        .await;
    assert_eq!(
        error_detail(resp, 404).await,
        "No sandbox_id associated with this job"
    );
    let resp = app
        .post_empty(&format!("/api/generation/{id}/snapshot"), ALICE)
        .await;
    let detail = error_detail(resp, 422).await;
    assert!(detail.as_str().unwrap().contains("READY"), "{detail}");
}

#[tokio::test]
async fn snapshot_pauses_a_running_sandbox_once() {
    let mut sandbox = MockSandboxRuntime::new();
    sandbox
        .expect_pause()
        .times(1)
        .returning(|_| Ok(PauseOutcome::Paused));
    let app = spawn_app_with(AppOptions {
        sandbox,
        ..AppOptions::default()
    })
    .await;
    let id = app.start_job(ALICE).await;
    make_ready(&app, id, PREVIEW).await;
    for _ in 0..2 {
        let resp = app
            .post_empty(&format!("/api/generation/{id}/snapshot"), ALICE)
            .await;
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body, json!({"job_id": id.to_string(), "paused": true}));
    }
    let row = app.job_row(id).await;
    assert_eq!(row.sandbox_state, SandboxState::Paused);
    assert!(row.sandbox_paused());
}
