//! A cancel while the generator is still writing code: the job fails as cancelled, no sandbox is left, and
//! the build never reaches READY.

use domain::SandboxId;
use serde_json::Value;

use crate::harness::{spawn_app, wait_until, Generator, Mode, Options, BUILD_DEADLINE};

const USER: &str = "user_e2e_cancel";

/// Reads the goal, then takes far longer than the test.
const SLOW_GENERATOR: &str = "cat >/dev/null\nsleep 30\n";

pub async fn cancel_during_build_leaves_no_sandbox(mode: Mode) {
    let app = spawn_app(
        mode,
        Options {
            generator: Generator::Script(SLOW_GENERATOR),
            ..Options::default()
        },
    )
    .await;
    let job = app
        .start_build(USER, "An app that never gets written")
        .await;

    // The generator runs in the code stage, after the sandbox was created.
    app.wait_status(job, USER, BUILD_DEADLINE, "code stage", |s| {
        s["status"] == "code"
    })
    .await;
    let row = app.row(job).await;
    let sandbox = SandboxId::try_from(row.sandbox_id.expect("sandbox_id recorded")).expect("id");
    assert!(
        !app.sandbox_gone(&sandbox).await,
        "the build has its sandbox"
    );
    let running = wait_until(BUILD_DEADLINE, || async {
        !app.generator_processes().is_empty()
    })
    .await;
    assert!(running, "the generator runs during the code stage");

    let resp = app
        .post(&format!("/api/generation/{job}/cancel"), USER, None)
        .await;
    assert_eq!(resp.status(), 200, "cancel");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["status"], "cancelled", "{body}");

    let status = app
        .wait_status(job, USER, BUILD_DEADLINE, "failed", |s| {
            s["status"] == "failed"
        })
        .await;
    let error = status["error_message"].as_str().unwrap_or_default();
    assert!(error.contains("Cancel"), "error says cancelled: {status:#}");

    let no_sandbox = wait_until(BUILD_DEADLINE, || async {
        app.sandbox_gone(&sandbox).await && app.sandboxes_of(job).await.is_empty()
    })
    .await;
    assert!(
        no_sandbox,
        "[{mode:?}] a sandbox is left for the cancelled job"
    );
    // The generator (an agent that could run for minutes) is stopped too.
    let stopped = wait_until(BUILD_DEADLINE, || async {
        app.generator_processes().is_empty()
    })
    .await;
    assert!(
        stopped,
        "generator still running: {:?}",
        app.generator_processes()
    );

    // A second cancel finds the job terminal, and nothing ever made it READY.
    let resp = app
        .post(&format!("/api/generation/{job}/cancel"), USER, None)
        .await;
    assert_eq!(resp.status(), 409, "cancel of a terminal job");
    let row = app.row(job).await;
    assert_eq!(row.status, "failed");
    assert!(row.preview_url.is_none(), "{row:?}");
    assert_ne!(row.sandbox_state, "running", "{row:?}");
    app.shut_down().await;
}
