//! The job-worker binary: configuration, telemetry, adapters, then build jobs until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use clap::Parser;

use job_worker::{telemetry, wiring, Config};

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    telemetry::init(config.log_format);
    let settings = config.worker_settings();
    tracing::info!(
        worker_id = %settings.worker_id,
        concurrency = settings.concurrency,
        runtime = ?config.sandbox_runtime,
        generator = ?config.generator,
        pause_policy = ?config.pause_policy,
        "starting job-worker"
    );
    let run = async {
        let deps = wiring::build(&config).await?;
        job_worker::run(deps, settings, job_worker::shutdown_on_signal()).await
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
