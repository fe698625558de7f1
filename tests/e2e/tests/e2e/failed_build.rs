//! A generator that produces bad files (JavaScript without a package.json): the build fails with its error
//! and debug_id shown, and its sandbox is killed.

use domain::SandboxId;

use crate::happy_path::is_final;
use crate::harness::{spawn_app, wait_until, Generator, Mode, Options, BUILD_DEADLINE};

const USER: &str = "user_e2e_failed";

/// Reads the goal, then prints one JavaScript file and no package.json.
const BAD_FILES: &str = r#"cat >/dev/null
echo '{"files":{"index.js":"console.log(1)"}}'
"#;

pub async fn bad_files_fail_and_kill_the_sandbox(mode: Mode) {
    let app = spawn_app(
        mode,
        Options {
            generator: Generator::Script(BAD_FILES),
            ..Options::default()
        },
    )
    .await;
    let job = app.start_build(USER, "An app with no package.json").await;

    let status = app
        .wait_status(job, USER, BUILD_DEADLINE, "failed", is_final)
        .await;
    assert_eq!(status["status"], "failed", "{status:#}");
    let error = status["error_message"].as_str().expect("error_message");
    assert!(
        error.contains("package.json"),
        "error names the cause: {error}"
    );
    let debug_id = status["debug_id"].as_str().expect("debug_id");
    uuid::Uuid::parse_str(debug_id).expect("debug_id is a uuid");
    assert!(status["preview_url"].is_null(), "{status:#}");
    assert_eq!(status["sandbox_paused"], false);

    // The sandbox was created (scaffold comes before code) and then killed.
    let row = app.row(job).await;
    let sandbox = SandboxId::try_from(row.sandbox_id.expect("sandbox_id recorded")).expect("id");
    let gone = wait_until(BUILD_DEADLINE, || app.sandbox_gone(&sandbox)).await;
    assert!(gone, "[{mode:?}] sandbox {sandbox:?} still exists");
    let killed = wait_until(BUILD_DEADLINE, || async {
        app.row(job).await.sandbox_state == "killed"
    })
    .await;
    assert!(killed, "[{mode:?}] row: {:?}", app.row(job).await);
    assert!(app.sandboxes_of(job).await.is_empty());
    app.shut_down().await;
}
