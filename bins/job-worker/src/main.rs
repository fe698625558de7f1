//! The job-worker binary: configuration, telemetry, adapters, then build jobs until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use job_worker::{init_telemetry, wiring, Config};

/// mimalloc: glibc's malloc (with its fastbin consolidation) was a fifth of the bench's CPU profiles.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    init_telemetry(config.log_format);
    let settings = config.worker_settings();
    tracing::info!(
        worker_id = %settings.worker_id,
        concurrency = settings.concurrency,
        runtime = ?config.runtime.sandbox_runtime,
        generator = ?config.generator,
        pause_policy = ?config.pause_policy,
        "starting job-worker"
    );
    let run = async {
        let wired = wiring::build_all(&config).await?;
        let shutdown = job_worker::shutdown_on_signal();
        if let Some(addr) = config.metrics_addr {
            serve_metrics(addr, shutdown.clone()).await?;
        }
        let retention = config.log_retention().map(|keep| {
            tokio::spawn(job_worker::run_log_retention(
                wired.worker.pipeline.log_archive.clone(),
                keep,
                shutdown.clone(),
            ))
        });
        let reconcile = async {
            if config.reconcile_interval_secs > 0 {
                let every = Duration::from_secs(config.reconcile_interval_secs);
                job_worker::run_reconciler(wired.reconciler, wired.lock, every, shutdown.clone())
                    .await;
            }
        };
        let builds = async {
            let result = job_worker::run(wired.worker, settings, shutdown.clone()).await;
            // However the build loop ended, the reconciler stops with it.
            shutdown.cancel();
            result
        };
        let (built, ()) = tokio::join!(builds, reconcile);
        if let Some(retention) = retention {
            let _ = retention.await;
        }
        built
    };
    match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line, with its causes: what failed and which setting to look at.
            tracing::error!(error = format!("{error:#}"), "job-worker stopped");
            eprintln!("job-worker: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Binds `addr` (failing start-up when it cannot) and serves the metrics in the background.
async fn serve_metrics(addr: SocketAddr, shutdown: CancellationToken) -> anyhow::Result<()> {
    let handle = bin_support::metrics::install()
        .context("cannot install the metrics recorder: another one is already installed")?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on WORKER_METRICS_ADDR={addr}"))?;
    tracing::info!(metrics_addr = %addr, "serving GET /metrics");
    tokio::spawn(async move {
        if let Err(error) = job_worker::metrics_server::serve(listener, handle, shutdown).await {
            tracing::error!(error = %error, "the metrics endpoint stopped");
        }
    });
    Ok(())
}
