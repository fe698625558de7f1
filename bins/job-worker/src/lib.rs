//! The job-worker: takes jobs off the Redis queue, up to `WORKER_CONCURRENCY` at a time, and runs the
//! domain's build pipeline on each (which pauses the sandbox after READY). Leases are kept alive by
//! heartbeats that also notice a cancel; on shutdown no new job is taken, running builds get a grace
//! period, and the rest are stopped and their jobs given back to the queue. Beside the builds runs the
//! reconciler, which keeps our records true to the provider's and the queue true to Postgres.
//!
//! This crate holds configuration, wiring and the run loop only: the business rules live in `domain`.

mod cancels;
pub mod config;
mod job;
pub mod metrics;
pub mod metrics_server;
mod reconciler;
mod stage_timer;
pub mod wiring;
mod worker;

pub use bin_support::{init_telemetry, JsonPackageParser};
pub use config::Config;
pub use reconciler::{run_log_retention, run_reconciler};
pub use stage_timer::StageTimer;
pub use worker::{run, WorkerDeps, WorkerSettings};

use tokio_util::sync::CancellationToken;

/// A token fired by SIGTERM or Ctrl-C.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let fire = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        fire.cancel();
    });
    token
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %error, "could not listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(error) => {
                tracing::warn!(error = %error, "could not listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
