//! End-to-end tests: a job started over HTTP runs through the real api-server, job-worker, Postgres, Redis and
//! sandbox runtime. Every scenario runs twice: `<scenario>_local` with `SANDBOX_RUNTIME=local`, and
//! `<scenario>_e2b` with `SANDBOX_RUNTIME=e2b` pointed at the E2B-compatible local server, so that the
//! production E2B client is exercised too.
//!
//! Needs Postgres (`DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`), Redis
//! (`REDIS_URL`, default `redis://127.0.0.1:6379`) and `node`/`npm` on the `PATH`.

mod cancel;
mod dev_server;
mod failed_build;
mod gateway;
mod happy_path;
mod harness;
mod logs;
mod metric_names;
mod reconcile;
mod resume;
mod sse;
mod worker_crash;

/// Generates one test per runtime for a scenario `async fn(Mode)`.
macro_rules! in_both_runtimes {
    ($scenario:path => $local:ident, $e2b:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $local() {
            $scenario(harness::Mode::Local).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $e2b() {
            $scenario(harness::Mode::E2b).await;
        }
    };
}

in_both_runtimes!(happy_path::preview_serves_the_goal => happy_path_preview_local, happy_path_preview_e2b);
in_both_runtimes!(logs::a_noisy_install_streams_live_and_the_archive_holds_the_same_lines => logs_noisy_install_local, logs_noisy_install_e2b);
in_both_runtimes!(happy_path::paused_after_ready => happy_path_paused_local, happy_path_paused_e2b);
in_both_runtimes!(failed_build::bad_files_fail_and_kill_the_sandbox => failed_build_local, failed_build_e2b);
in_both_runtimes!(dev_server::a_dev_server_that_exits_fails_the_build_with_its_error => dev_server_exits_local, dev_server_exits_e2b);
in_both_runtimes!(dev_server::a_port_nothing_listens_on_fails_the_build => dev_server_never_listens_local, dev_server_never_listens_e2b);
in_both_runtimes!(cancel::cancel_during_build_leaves_no_sandbox => cancel_during_build_local, cancel_during_build_e2b);
in_both_runtimes!(resume::resume_then_snapshot => resume_snapshot_local, resume_snapshot_e2b);
in_both_runtimes!(resume::resume_of_an_expired_sandbox => resume_expired_local, resume_expired_e2b);
in_both_runtimes!(reconcile::paused_behind_our_back_is_detected => drift_paused_behind_our_back_local, drift_paused_behind_our_back_e2b);
in_both_runtimes!(reconcile::leaked_sandbox_is_killed => leaked_sandbox_killed_local, leaked_sandbox_killed_e2b);
in_both_runtimes!(reconcile::redis_loss_loses_no_job => redis_loss_local, redis_loss_e2b);
in_both_runtimes!(reconcile::redis_loss_mid_build_loses_no_job => redis_loss_mid_build_local, redis_loss_mid_build_e2b);
in_both_runtimes!(worker_crash::crashed_worker_build_is_rebuilt => worker_crash_mid_build_local, worker_crash_mid_build_e2b);
in_both_runtimes!(reconcile::idle_resumed_sandbox_is_paused_again => idle_repause_local, idle_repause_e2b);
in_both_runtimes!(gateway::a_paused_preview_wakes_serves_and_sleeps => gateway_wakes_serves_and_sleeps_local, gateway_wakes_serves_and_sleeps_e2b);
in_both_runtimes!(gateway::signed_previews_open_only_for_their_owner => gateway_signed_local, gateway_signed_e2b);

/// A real browser through the gateway (local runtime: the browser sees the same gateway either way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_browser_local() {
    gateway::a_browser_opens_a_paused_preview(harness::Mode::Local).await;
}

/// E2B server only: the local runtime has no faults to inject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_pause_retried_e2b() {
    reconcile::failed_pause_is_retried(harness::Mode::E2b).await;
}

/// The names `deploy/` uses against what the binaries export (no build needed: local mode).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_alerts_and_the_dashboard_name_is_exported() {
    metric_names::every_metric_the_alerts_and_the_dashboard_name_is_exported().await;
}
