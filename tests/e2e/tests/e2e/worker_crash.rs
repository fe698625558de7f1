//! A worker dies in the middle of a build: its lease expires, another worker's reconciler kills the old
//! sandbox and requeues the job, and the job is built again to READY.

use domain::SandboxId;

use crate::happy_path::is_final;
use crate::harness::{spawn_app, wait_until, Generator, Mode, Options, BUILD_DEADLINE};
use crate::reconcile::SLOW_APP;

const USER: &str = "user_e2e_crash";

pub async fn crashed_worker_build_is_rebuilt(mode: Mode) {
    let mut app = spawn_app(
        mode,
        Options {
            fast_reconcile: true,
            generator: Generator::Script(SLOW_APP),
            ..Options::default()
        },
    )
    .await;
    let job = app.start_build(USER, "An app whose worker dies").await;
    app.wait_status(job, USER, BUILD_DEADLINE, "code stage", |s| {
        s["status"] == "code"
    })
    .await;
    let first =
        SandboxId::try_from(app.row(job).await.sandbox_id.expect("sandbox_id")).expect("id");

    app.crash_worker().await;
    app.start_another_worker();

    let status = app
        .wait_status(
            job,
            USER,
            BUILD_DEADLINE * 2,
            "ready after the crash",
            |s| is_final(s) && (s["status"] != "ready" || s["sandbox_paused"] == true),
        )
        .await;
    assert_eq!(status["status"], "ready", "{status:#}");
    let row = app.row(job).await;
    let last = SandboxId::try_from(row.sandbox_id.expect("sandbox_id")).expect("id");
    assert_ne!(first, last, "the job was built again in a new sandbox");
    let old_gone = wait_until(BUILD_DEADLINE, || app.sandbox_gone(&first)).await;
    assert!(
        old_gone,
        "[{mode:?}] the crashed build's sandbox was not killed"
    );
    assert_eq!(app.sandboxes_of(job).await, vec![last]);
    app.shut_down().await;
}
