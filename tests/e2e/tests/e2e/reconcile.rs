//! The reconciler, seen from outside: records follow the provider's truth, leaked sandboxes are killed,
//! failed pauses are retried, idle resumed sandboxes are paused again.

use std::time::Duration;

use domain::ports::{ProviderState, SandboxSpec};
use domain::{JobId, ProjectId, SandboxId, UserId};
use infra_local::e2b_server::FaultConfig;

use crate::happy_path::is_final;
use crate::harness::{
    fetch_preview, spawn_app, wait_until, Generator, Mode, Options, TestApp, BUILD_DEADLINE,
};

const USER: &str = "user_e2e_reconcile";
/// Reconciler passes come every second in these tests.
const RECONCILE_DEADLINE: Duration = Duration::from_secs(30);

/// Builds until READY (with `sandbox_paused` as `paused`); returns the job and its sandbox.
async fn ready_build(app: &TestApp, paused: bool) -> (JobId, SandboxId) {
    let job = app.start_build(USER, "A reconciled app").await;
    let status = app
        .wait_status(job, USER, BUILD_DEADLINE, "ready", |s| {
            is_final(s) && (s["status"] != "ready" || s["sandbox_paused"] == paused)
        })
        .await;
    assert_eq!(status["status"], "ready", "{status:#}");
    let sandbox =
        SandboxId::try_from(app.row(job).await.sandbox_id.expect("sandbox_id")).expect("id");
    (job, sandbox)
}

/// A sandbox paused at the provider behind our back: Postgres and the status follow.
pub async fn paused_behind_our_back_is_detected(mode: Mode) {
    let app = spawn_app(
        mode,
        Options {
            pause_policy: "never",
            ..Options::default()
        },
    )
    .await;
    let (job, sandbox) = ready_build(&app, false).await;
    app.runtime
        .pause(&sandbox)
        .await
        .expect("pause at the provider");

    let followed = wait_until(RECONCILE_DEADLINE, || async {
        let row = app.row(job).await;
        row.sandbox_paused && row.sandbox_state == "paused"
    })
    .await;
    assert!(
        followed,
        "[{mode:?}] drift not corrected: {:?}",
        app.row(job).await
    );
    assert_eq!(app.status(job, USER).await["sandbox_paused"], true);
    assert_eq!(app.row(job).await.status, "ready");
    app.shut_down().await;
}

/// A sandbox of ours that no job owns is killed.
pub async fn leaked_sandbox_is_killed(mode: Mode) {
    let app = spawn_app(mode, Options::default()).await;
    let orphan = JobId::new();
    let sandbox = app
        .runtime
        .create(&SandboxSpec {
            job_id: orphan,
            user_id: UserId::try_from(USER).expect("user"),
            project_id: ProjectId::new(),
            timeout: Duration::from_secs(600),
            auto_pause: false,
        })
        .await
        .expect("create a sandbox no job owns");
    assert_eq!(app.sandboxes_of(orphan).await, vec![sandbox.clone()]);

    let killed = wait_until(RECONCILE_DEADLINE, || app.sandbox_gone(&sandbox)).await;
    assert!(killed, "[{mode:?}] the leaked sandbox is still there");
    app.shut_down().await;
}

/// Pauses fail at the provider: the job stays READY with `sandbox_paused: false`; once pauses work again the
/// reconciler's retry pauses it. (E2B server only: the local runtime has no faults to inject.)
pub async fn failed_pause_is_retried(mode: Mode) {
    assert_eq!(mode, Mode::E2b, "needs the E2B server's fault injection");
    let app = spawn_app(
        mode,
        Options {
            faults: FaultConfig {
                pause_fail_ratio: 1.0,
                ..FaultConfig::default()
            },
            fast_reconcile: true,
            // Status polls are preview activity, which defers the retry by this long.
            idle_pause_secs: 2,
            ..Options::default()
        },
    )
    .await;
    let job = app.start_build(USER, "An app that will not sleep").await;
    let status = app
        .wait_status(job, USER, BUILD_DEADLINE, "ready", is_final)
        .await;
    assert_eq!(status["status"], "ready", "{status:#}");
    // Never recorded as paused while the provider refuses.
    let refused = wait_until(Duration::from_secs(5), || async {
        app.row(job).await.sandbox_state != "pausing"
    })
    .await;
    assert!(refused);
    let row = app.row(job).await;
    assert!(!row.sandbox_paused, "{row:?}");
    let sandbox = SandboxId::try_from(row.sandbox_id.expect("sandbox_id")).expect("id");
    assert_eq!(
        app.runtime.state(&sandbox).await.expect("state"),
        ProviderState::Running
    );

    app.set_faults(&FaultConfig::default())
        .await
        .expect("e2b mode");
    let paused = wait_until(RECONCILE_DEADLINE, || async {
        let row = app.row(job).await;
        row.sandbox_paused && row.sandbox_state == "paused"
    })
    .await;
    assert!(paused, "pause not retried: {:?}", app.row(job).await);
    assert_eq!(
        app.runtime.state(&sandbox).await.expect("state"),
        ProviderState::Paused
    );
    assert_eq!(app.status(job, USER).await["sandbox_paused"], true);
    app.shut_down().await;
}

/// A resumed sandbox without preview activity is paused again after `IDLE_PAUSE_SECS`.
pub async fn idle_resumed_sandbox_is_paused_again(mode: Mode) {
    let app = spawn_app(
        mode,
        Options {
            idle_pause_secs: 2,
            fast_reconcile: true,
            ..Options::default()
        },
    )
    .await;
    let (job, sandbox) = ready_build(&app, true).await;
    let resp = app
        .post(&format!("/api/generation/{job}/resume"), USER, None)
        .await;
    assert_eq!(resp.status(), 200, "resume");
    let body: serde_json::Value = resp.json().await.expect("json");
    let preview = body["preview_url"]
        .as_str()
        .expect("preview_url")
        .to_owned();
    fetch_preview(&preview)
        .await
        .expect("the resumed preview answers");

    // Watched through Postgres only: status polls count as activity and would keep it awake.
    let repaused = wait_until(RECONCILE_DEADLINE, || async {
        let row = app.row(job).await;
        row.sandbox_paused && row.sandbox_state == "paused"
    })
    .await;
    assert!(
        repaused,
        "[{mode:?}] not paused when idle: {:?}",
        app.row(job).await
    );
    assert_eq!(
        app.runtime.state(&sandbox).await.expect("state"),
        ProviderState::Paused
    );
    app.shut_down().await;
}

/// Redis loses everything while a build is queued or running: the job still reaches READY (requeued from
/// Postgres, or recovered as an orphan), the status answers throughout, and exactly one sandbox is left.
pub async fn redis_loss_loses_no_job(mode: Mode) {
    let app = spawn_app(
        mode,
        Options {
            fast_reconcile: true,
            ..Options::default()
        },
    )
    .await;
    let job = app.start_build(USER, "An app that survives a flush").await;
    let flushed = app.flush_redis().await;
    assert!(flushed > 0, "the job had Redis keys");

    let status = app
        .wait_status(
            job,
            USER,
            BUILD_DEADLINE * 2,
            "ready after the flush",
            |s| is_final(s) && (s["status"] != "ready" || s["sandbox_paused"] == true),
        )
        .await;
    assert_eq!(status["status"], "ready", "{status:#}");
    let row = app.row(job).await;
    assert!(row.sandbox_paused, "{row:?}");
    let sandbox = SandboxId::try_from(row.sandbox_id.expect("sandbox_id")).expect("id");
    // A build stopped by the flush had its own sandbox: it must not outlive it.
    let one_left = wait_until(RECONCILE_DEADLINE, || async {
        app.sandboxes_of(job).await == vec![sandbox.clone()]
    })
    .await;
    assert!(
        one_left,
        "[{mode:?}] sandboxes left: {:?}",
        app.sandboxes_of(job).await
    );
    app.shut_down().await;
}

/// Takes a few seconds, then writes a working app (a dev script and a node server answering "slow app").
pub const SLOW_APP: &str = r#"cat >/dev/null
sleep 3
cat <<'JSON'
{"files":{"package.json":"{\"name\":\"slow\",\"version\":\"0.1.0\",\"scripts\":{\"dev\":\"node server.js\"}}","server.js":"require('http').createServer((q, r) => r.end('slow app')).listen(process.env.PORT || 3000);"}}
JSON
"#;

/// Redis loses everything while the generator runs (the job is leased and building): the job still ends
/// READY, and no sandbox but its last one is left.
pub async fn redis_loss_mid_build_loses_no_job(mode: Mode) {
    let app = spawn_app(
        mode,
        Options {
            fast_reconcile: true,
            generator: Generator::Script(SLOW_APP),
            ..Options::default()
        },
    )
    .await;
    let job = app
        .start_build(USER, "An app that survives a flush mid-build")
        .await;
    app.wait_status(job, USER, BUILD_DEADLINE, "code stage", |s| {
        s["status"] == "code"
    })
    .await;
    let flushed = app.flush_redis().await;
    assert!(flushed > 0, "the job had Redis keys");

    let status = app
        .wait_status(
            job,
            USER,
            BUILD_DEADLINE * 2,
            "ready after the flush",
            |s| is_final(s) && (s["status"] != "ready" || s["sandbox_paused"] == true),
        )
        .await;
    assert_eq!(status["status"], "ready", "{status:#}");
    let row = app.row(job).await;
    let sandbox = SandboxId::try_from(row.sandbox_id.expect("sandbox_id")).expect("id");
    let one_left = wait_until(RECONCILE_DEADLINE, || async {
        app.sandboxes_of(job).await == vec![sandbox.clone()]
    })
    .await;
    assert!(
        one_left,
        "[{mode:?}] sandboxes left: {:?}",
        app.sandboxes_of(job).await
    );
    app.shut_down().await;
}
