//! `cargo xtask test [ARGS]` and `cargo xtask ci`: the workspace's tests against real Postgres and Redis,
//! then the end-to-end suite again on a three-node Redis Cluster.
//!
//! Tests make their own databases (sqlx::test style) and Redis key prefixes, so DATABASE_URL only has to
//! name a server and a database to connect to first: by default the `postgres` database. The cluster is
//! the one `REDIS_CLUSTER_URL` names, or a private one; infra-redis's cluster tests get it through that
//! variable, and the second e2e run as its `REDIS_URL`.

use std::process::{ExitCode, Stdio};

use sqlx::migrate::MigrateDatabase;
use sqlx::Postgres;

use crate::run;
use crate::services::{self, ensure_postgres, ensure_redis, ensure_redis_cluster};
use crate::workspace::{cargo_command, env_or, DEFAULT_REDIS_URL};

/// Where tests connect first when DATABASE_URL is unset.
const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Passed to `cargo nextest run` (or `cargo test`), e.g. `-p domain` or a test name filter. With none,
    /// the e2e suite then runs a second time on the Redis Cluster.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

pub async fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    let database_url = services::parse_url(
        "DATABASE_URL",
        &env_or("DATABASE_URL", DEFAULT_TEST_DATABASE_URL),
    )?;
    let redis_url = services::parse_url("REDIS_URL", &env_or("REDIS_URL", DEFAULT_REDIS_URL))?;
    let cluster_url = match std::env::var("REDIS_CLUSTER_URL") {
        Ok(value) if !value.is_empty() => Some(services::parse_url("REDIS_CLUSTER_URL", &value)?),
        _ => None,
    };
    let postgres = ensure_postgres(&database_url).await?;
    let redis = ensure_redis(&redis_url).await?;
    let cluster = ensure_redis_cluster(cluster_url.as_ref()).await?;
    let url = postgres.url().as_str();
    let exists = Postgres::database_exists(url)
        .await
        .map_err(|err| services::postgres_error(postgres.url(), &err))?;
    if !exists {
        Postgres::create_database(url)
            .await
            .map_err(|err| services::postgres_error(postgres.url(), &err))?;
    }
    for service in [&postgres, &redis, &cluster] {
        eprintln!("xtask: {}", service.describe());
    }

    let nextest = has_nextest().await;
    let env = [
        ("DATABASE_URL", postgres.url().as_str()),
        ("REDIS_URL", redis.url().as_str()),
        ("REDIS_CLUSTER_URL", cluster.url().as_str()),
    ];
    let mut status = run_tests(nextest, &args.args, &env).await?;
    if status.success() && args.args.is_empty() {
        eprintln!(
            "xtask: the e2e suite again, on the Redis Cluster (REDIS_URL={})",
            services::redact(cluster.url())
        );
        let on_cluster = [
            ("DATABASE_URL", postgres.url().as_str()),
            ("REDIS_URL", cluster.url().as_str()),
            ("REDIS_CLUSTER_URL", cluster.url().as_str()),
        ];
        status = run_tests(nextest, &["-p".to_owned(), "e2e".to_owned()], &on_cluster).await?;
    }
    // Stopped before returning so that the runner's summary stays the last thing printed.
    drop(cluster);
    drop(redis);
    drop(postgres);
    Ok(run::exit_code(status))
}

/// One run of the test runner with `args` and these service URLs in its environment.
async fn run_tests(
    nextest: bool,
    args: &[String],
    env: &[(&str, &str)],
) -> anyhow::Result<std::process::ExitStatus> {
    let mut command = cargo_command();
    if nextest {
        command.args(["nextest", "run"]);
    } else {
        command.arg("test");
    }
    // `--workspace` would override a package selection given by the caller.
    if !selects_packages(args) {
        command.arg("--workspace");
    }
    command.args(args).envs(env.iter().copied());
    if nextest && std::env::var_os("CI").is_some() && std::env::var_os("NEXTEST_PROFILE").is_none()
    {
        command.env("NEXTEST_PROFILE", "ci");
    }
    let runner = if nextest {
        "cargo nextest run"
    } else {
        "cargo test"
    };
    run::status(command, runner).await
}

/// What CI runs: formatting, clippy with warnings denied, then the tests.
pub async fn ci() -> anyhow::Result<ExitCode> {
    let mut fmt = cargo_command();
    fmt.args(["fmt", "--all", "--check"]);
    run::checked(fmt, "cargo fmt --all --check").await?;
    let mut clippy = cargo_command();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    run::checked(
        clippy,
        "cargo clippy --workspace --all-targets -- -D warnings",
    )
    .await?;
    run(TestArgs { args: Vec::new() }).await
}

async fn has_nextest() -> bool {
    let mut probe = cargo_command();
    probe
        .args(["nextest", "--version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    probe.status().await.is_ok_and(|status| status.success())
}

fn selects_packages(args: &[String]) -> bool {
    args.iter().take_while(|arg| *arg != "--").any(|arg| {
        arg == "-p"
            || arg == "--package"
            || arg.starts_with("--package=")
            || (arg.starts_with("-p") && !arg.starts_with("--"))
    })
}
