//! After the pause: resume brings the preview back with the same page; snapshot pauses it again.

use domain::ports::ProviderState;
use domain::SandboxId;
use serde_json::Value;

use crate::happy_path::is_final;
use crate::harness::{fetch_preview, spawn_app, wait_until, Mode, Options, BUILD_DEADLINE};

const USER: &str = "user_e2e_resume";

pub async fn resume_then_snapshot(mode: Mode) {
    let app = spawn_app(mode, Options::default()).await;
    let goal = format!("A tide table {}", uuid::Uuid::new_v4().simple());
    let job = app.start_build(USER, &goal).await;
    let status = app
        .wait_status(job, USER, BUILD_DEADLINE, "ready and paused", |s| {
            is_final(s) && (s["status"] != "ready" || s["sandbox_paused"] == true)
        })
        .await;
    assert_eq!(status["status"], "ready", "{status:#}");
    assert_eq!(status["sandbox_paused"], true);
    let sandbox =
        SandboxId::try_from(app.row(job).await.sandbox_id.expect("sandbox_id")).expect("id");

    // Two resumes at once (a double click) share one: both answer the same preview.
    let path = format!("/api/generation/{job}/resume");
    let (first, second) = tokio::join!(app.post(&path, USER, None), app.post(&path, USER, None));
    assert_eq!(first.status(), 200, "resume");
    assert_eq!(second.status(), 200, "concurrent resume");
    let body: Value = first.json().await.expect("json");
    let other: Value = second.json().await.expect("json");
    assert_eq!(body, other, "concurrent resumes answer alike");
    assert_eq!(body["sandbox_id"], sandbox.as_str(), "{body}");
    let preview = body["preview_url"]
        .as_str()
        .expect("preview_url")
        .to_owned();
    let page = fetch_preview(&preview)
        .await
        .expect("the resumed preview answers");
    assert!(page.contains(&goal), "the page shows the goal: {page}");
    let status = app.status(job, USER).await;
    assert_eq!(status["sandbox_paused"], false, "{status:#}");
    let row = app.row(job).await;
    assert_eq!(row.sandbox_state, "running", "{row:?}");
    assert_eq!(
        app.runtime.state(&sandbox).await.expect("state"),
        ProviderState::Running
    );

    // Resuming a running sandbox answers its preview at once.
    let resp = app.post(&path, USER, None).await;
    assert_eq!(resp.status(), 200, "resume of a running sandbox");
    let again: Value = resp.json().await.expect("json");
    assert_eq!(again["preview_url"], body["preview_url"]);

    // Snapshot: paused again, for real.
    let resp = app
        .post(&format!("/api/generation/{job}/snapshot"), USER, None)
        .await;
    assert_eq!(resp.status(), 200, "snapshot");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["paused"], true, "{body}");
    assert_eq!(body["job_id"], job.to_string());
    let row = app.row(job).await;
    assert!(row.sandbox_paused, "{row:?}");
    assert_eq!(row.sandbox_state, "paused");
    assert_eq!(
        app.runtime.state(&sandbox).await.expect("state"),
        ProviderState::Paused
    );
    let stopped = wait_until(BUILD_DEADLINE, || async {
        fetch_preview(&preview).await.is_err()
    })
    .await;
    assert!(stopped, "[{mode:?}] the snapshotted preview still answers");
    assert_eq!(app.status(job, USER).await["sandbox_paused"], true);

    // Snapshot is idempotent.
    let resp = app
        .post(&format!("/api/generation/{job}/snapshot"), USER, None)
        .await;
    assert_eq!(resp.status(), 200, "second snapshot");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["paused"], true, "{body}");
    app.shut_down().await;
}

/// The provider no longer has the paused sandbox: resume answers 503 `sandbox_expired` and the job's
/// sandbox is recorded as expired.
pub async fn resume_of_an_expired_sandbox(mode: Mode) {
    // The reconciler would notice the loss first (that is its job); here the resume must.
    let app = spawn_app(
        mode,
        Options {
            reconcile_every_secs: 3600,
            ..Options::default()
        },
    )
    .await;
    let job = app.start_build(USER, "An app that expires").await;
    let status = app
        .wait_status(job, USER, BUILD_DEADLINE, "ready and paused", |s| {
            is_final(s) && (s["status"] != "ready" || s["sandbox_paused"] == true)
        })
        .await;
    assert_eq!(status["status"], "ready", "{status:#}");
    let sandbox =
        SandboxId::try_from(app.row(job).await.sandbox_id.expect("sandbox_id")).expect("id");
    app.runtime
        .kill(&sandbox)
        .await
        .expect("kill at the provider");

    let resp = app
        .post(&format!("/api/generation/{job}/resume"), USER, None)
        .await;
    assert_eq!(resp.status(), 503, "resume of an expired sandbox");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["detail"]["error_type"], "sandbox_expired", "{body}");
    assert!(body["detail"]["message"].is_string(), "{body}");
    assert!(body["debug_id"].is_string(), "{body}");
    let row = app.row(job).await;
    assert_eq!(row.sandbox_state, "expired", "{row:?}");
    assert!(!row.sandbox_paused);
    assert_eq!(app.status(job, USER).await["sandbox_paused"], false);
    app.shut_down().await;
}
