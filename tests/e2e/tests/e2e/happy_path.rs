//! A build started over HTTP reaches READY with a preview serving the generated page; with the default
//! `immediate` policy its sandbox is then paused, and every view agrees.

use domain::ports::ProviderState;
use domain::SandboxId;

use crate::harness::{fetch_preview, spawn_app, Mode, Options, BUILD_DEADLINE};
use crate::sse::{assert_stages_in_order, collect_statuses};

const USER: &str = "user_e2e_happy";

/// With `PAUSE_POLICY=never` the READY preview stays up: it serves a page showing the goal.
pub async fn preview_serves_the_goal(mode: Mode) {
    let app = spawn_app(
        mode,
        Options {
            pause_policy: "never",
            ..Options::default()
        },
    )
    .await;
    let goal = format!("A pancake planner {}", uuid::Uuid::new_v4().simple());
    let job = app.start_build(USER, &goal).await;

    let status = app
        .wait_status(job, USER, BUILD_DEADLINE, "ready", is_final)
        .await;
    assert_eq!(status["status"], "ready", "{status:#}");
    assert_eq!(status["sandbox_paused"], false);
    let preview = status["preview_url"]
        .as_str()
        .expect("preview_url")
        .to_owned();
    let page = fetch_preview(&preview).await.expect("the preview answers");
    assert!(page.contains(&goal), "the page shows the goal: {page}");

    let row = app.row(job).await;
    assert_eq!(row.sandbox_state, "running");
    assert!(!row.sandbox_paused);
    assert_eq!(row.preview_url.as_deref(), Some(preview.as_str()));
    app.shut_down().await;
}

/// With the default `immediate` policy: the events arrive in order ending with ready, then the status says
/// `sandbox_paused: true`, Postgres agrees, the provider has it paused and the preview no longer answers.
pub async fn paused_after_ready(mode: Mode) {
    let app = spawn_app(mode, Options::default()).await;
    let goal = format!("A kite shop {}", uuid::Uuid::new_v4().simple());
    let job = app.start_build(USER, &goal).await;
    let events = collect_statuses(
        app.get(&format!("/api/generation/{job}/events"), USER)
            .await,
    );

    let status = app
        .wait_status(job, USER, BUILD_DEADLINE, "ready and paused", |s| {
            is_final(s) && (s["status"] != "ready" || s["sandbox_paused"] == true)
        })
        .await;
    assert_eq!(status["status"], "ready", "{status:#}");
    assert_eq!(status["sandbox_paused"], true);
    assert!(status["error_message"].is_null(), "{status:#}");
    let preview = status["preview_url"]
        .as_str()
        .expect("preview_url")
        .to_owned();

    let seen = tokio::time::timeout(BUILD_DEADLINE, events)
        .await
        .expect("the event stream closes after ready")
        .expect("event reader");
    assert_stages_in_order(&seen);

    let row = app.row(job).await;
    assert_eq!(row.status, "ready");
    assert!(row.sandbox_paused, "{row:?}");
    assert_eq!(row.sandbox_state, "paused");
    let sandbox = SandboxId::try_from(row.sandbox_id.expect("sandbox_id")).expect("id");
    assert_eq!(
        app.runtime.state(&sandbox).await.expect("state"),
        ProviderState::Paused
    );
    let err = fetch_preview(&preview)
        .await
        .expect_err("a paused preview does not answer");
    assert!(!err.is_empty());
    app.shut_down().await;
}

pub fn is_final(status: &serde_json::Value) -> bool {
    status["status"] == "ready" || status["status"] == "failed"
}
