//! `cargo xtask bench [--quick]`: Slipway against its physical limits, each figure beside a baseline
//! taken in the same run on the same machine (see issue 7).
//!
//! The command builds the release binaries, then re-runs itself from `target/release/xtask` (a debug load
//! generator would measure itself). That run uses or starts Postgres and Redis, recreates the
//! `slipway_bench` database, takes a Redis key prefix of its own, starts the release api-server on a free
//! port of 127.0.0.1, runs the scenarios, stops what it started, deletes its keys, and writes
//! `target/bench/report.md` and `target/bench/report.json`. Jobs are built by job-worker's run loop, in process, over
//! the instant runtime ([`instant_runtime`]), which no configuration of the real binaries can select.

mod events;
mod http_load;
pub mod instant_runtime;
mod log_stream;
mod report;
mod scenarios;
mod seed;
pub(crate) mod stack;
mod stats;
mod status_reads;
mod throughput;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use fred::prelude::ClientLike;

use crate::run;
use crate::services::{self, ensure_postgres, ensure_redis};
use crate::workspace::{
    cargo_command, env_or, target_dir, DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL,
};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// A few seconds per scenario: the CI smoke test.
    #[arg(long)]
    quick: bool,
    /// Keep-alive connections of the status-read load generator (and of the HGETALL baseline).
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Internal: the release binaries are built and this is the release xtask; run the scenarios.
    #[arg(long, hide = true)]
    prebuilt: bool,
}

/// How big and how long each scenario is.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sizes {
    pub mode: &'static str,
    pub connections: usize,
    pub status_jobs: usize,
    pub status_duration: Duration,
    pub hgetall_requests: u64,
    pub throughput_jobs: usize,
    pub throughput_projects: usize,
    pub worker_concurrency: usize,
    pub job_deadline: Duration,
    pub event_streams: usize,
    pub pgbench_seconds: u64,
    /// Jobs built one at a time for the pause-bookkeeping figure.
    pub pause_solo_jobs: usize,
}

impl Sizes {
    fn new(quick: bool, connections: usize) -> Self {
        if quick {
            Self {
                mode: "quick",
                connections,
                status_jobs: 200,
                status_duration: Duration::from_secs(3),
                hgetall_requests: 100_000,
                throughput_jobs: 200,
                throughput_projects: 20,
                worker_concurrency: 64,
                job_deadline: Duration::from_secs(60),
                event_streams: 100,
                pgbench_seconds: 3,
                pause_solo_jobs: 20,
            }
        } else {
            Self {
                mode: "full",
                connections,
                status_jobs: 2_000,
                status_duration: Duration::from_secs(20),
                hgetall_requests: 1_000_000,
                throughput_jobs: 5_000,
                throughput_projects: 100,
                worker_concurrency: 64,
                job_deadline: Duration::from_secs(240),
                event_streams: 1_000,
                pgbench_seconds: 10,
                pause_solo_jobs: 100,
            }
        }
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if !args.prebuilt {
        let mut build = cargo_command();
        build.args(["build", "--release", "-p", "api-server", "-p", "xtask"]);
        run::checked(build, "cargo build --release -p api-server -p xtask").await?;
        let mut bench = tokio::process::Command::new(target_dir().join("release").join("xtask"));
        bench.current_dir(crate::workspace::root()).args([
            "bench",
            "--prebuilt",
            "--connections",
            &args.connections.to_string(),
        ]);
        if args.quick {
            bench.arg("--quick");
        }
        let status = run::status(bench, "xtask bench (release)").await?;
        return Ok(run::exit_code(status));
    }
    let sizes = Sizes::new(args.quick, args.connections);
    let out_dir = target_dir().join("bench");
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;

    let database_url = services::parse_url(
        "DATABASE_URL",
        &env_or("DATABASE_URL", DEFAULT_DATABASE_URL),
    )?;
    let redis_url = services::parse_url("REDIS_URL", &env_or("REDIS_URL", DEFAULT_REDIS_URL))?;
    let postgres = ensure_postgres(&database_url).await?;
    let redis = ensure_redis(&redis_url).await?;
    eprintln!("bench: {}", postgres.describe());
    eprintln!("bench: {}", redis.describe());

    let (pool, admin) = stack::fresh_database(postgres.url()).await?;
    let client = infra_redis::connect(redis.url().as_str())
        .await
        .context("cannot connect to Redis")?;
    let prefix = stack::redis_prefix();
    let bench_url = stack::database_url(postgres.url(), stack::DATABASE);
    let api = stack::ApiServer::start(
        &stack::ApiSettings {
            database_url: &bench_url,
            redis_url: redis.url(),
            redis_prefix: &prefix,
        },
        &out_dir,
    )
    .await;
    let outcome = match api {
        Ok(api) => {
            let context = scenarios::Context {
                sizes: &sizes,
                pool: &pool,
                admin: &admin,
                redis: &client,
                redis_url: redis.url(),
                database_url: &bench_url,
                prefix: &prefix,
                out_dir: &out_dir,
            };
            let outcome = scenarios::run(&context, &api).await;
            api.stop().await;
            outcome
        }
        Err(err) => Err(err),
    };
    match stack::delete_prefix(&client, &prefix).await {
        Ok(n) => eprintln!("bench: deleted {n} Redis keys under {prefix}"),
        Err(err) => eprintln!("bench: could not delete the keys under {prefix}: {err:#}"),
    }
    let _ = client.quit().await;
    pool.close().await;
    admin.close().await;
    drop(redis);
    drop(postgres);
    let missed = outcome?;
    let report = out_dir.join("report.md");
    println!(
        "bench: wrote {} and report.json ({missed} target(s) missed)",
        report.display()
    );
    Ok(ExitCode::SUCCESS)
}
