//! `cargo xtask bench [--quick] [--only core|gateway]`: Slipway against its physical limits, each figure
//! beside a baseline taken in the same run on the same machine (see issue 7). Every scenario runs unless
//! `--only` names one group: `core` (status reads, events, build logs, job throughput, pause bookkeeping)
//! or `gateway` (the preview gateway against the same dev server direct, see [`gateway`]).
//!
//! The command builds the release binaries, then re-runs itself from `target/release/xtask` (a debug load
//! generator would measure itself). That run uses or starts Postgres and Redis, recreates the
//! `slipway_bench` database, takes a Redis key prefix of its own, starts the release api-server on a free
//! port of 127.0.0.1, runs the scenarios, stops what it started, deletes its keys, and writes
//! `target/bench/report.md` and `target/bench/report.json`. Jobs are built by job-worker's run loop, in process, over
//! the instant runtime ([`instant_runtime`]), which no configuration of the real binaries can select. The
//! api-server always serves the preview gateway on a second free port (cheap when unused).

mod events;
mod gateway;
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
    /// Run one group of scenarios only (all of them when absent).
    #[arg(long, value_enum)]
    only: Option<Only>,
    /// Internal: the release binaries are built and this is the release xtask; run the scenarios.
    #[arg(long, hide = true)]
    prebuilt: bool,
}

/// The scenarios `--only` can pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Only {
    /// Status reads, events, build logs, job throughput and pause bookkeeping (one api-server, one worker).
    Core,
    /// The preview gateway: requests/s and p99 against the dev server direct, wake latency against the
    /// runtime's own resume, api-server RSS with proxied WebSockets open.
    Gateway,
}

impl Only {
    /// Whether a run restricted to `only` (everything when `None`) includes `self`.
    pub fn selected(self, only: Option<Only>) -> bool {
        only.is_none_or(|only| only == self)
    }

    fn name(self) -> &'static str {
        match self {
            Only::Core => "core",
            Only::Gateway => "gateway",
        }
    }
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
    /// How long each side (gateway, direct) of the gateway's requests/s comparison is loaded, in total.
    pub gateway_duration: Duration,
    /// Wakes through the gateway, and as many resumes of the runtime alone, alternated.
    pub gateway_wake_rounds: usize,
    /// WebSockets held open through the gateway for the RSS figure.
    pub gateway_sockets: usize,
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
                gateway_duration: Duration::from_secs(4),
                gateway_wake_rounds: 5,
                gateway_sockets: 1_000,
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
                gateway_duration: Duration::from_secs(20),
                gateway_wake_rounds: 20,
                gateway_sockets: 1_000,
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
        if let Some(only) = args.only {
            bench.args(["--only", only.name()]);
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
            let outcome = scenarios::run(&context, &api, args.only).await;
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
