//! `cargo xtask test [ARGS]` and `cargo xtask ci`: the workspace's tests against real Postgres and Redis.
//!
//! Tests make their own databases (sqlx::test style) and Redis key prefixes, so DATABASE_URL only has to
//! name a server and a database to connect to first: by default the `postgres` database.

use std::process::{ExitCode, Stdio};

use sqlx::migrate::MigrateDatabase;
use sqlx::Postgres;

use crate::run;
use crate::services::{self, ensure_postgres, ensure_redis};
use crate::workspace::{cargo_command, env_or, DEFAULT_REDIS_URL};

/// Where tests connect first when DATABASE_URL is unset.
const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Passed to `cargo nextest run` (or `cargo test`), e.g. `-p domain` or a test name filter.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

pub async fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    let database_url = services::parse_url(
        "DATABASE_URL",
        &env_or("DATABASE_URL", DEFAULT_TEST_DATABASE_URL),
    )?;
    let redis_url = services::parse_url("REDIS_URL", &env_or("REDIS_URL", DEFAULT_REDIS_URL))?;
    let postgres = ensure_postgres(&database_url).await?;
    let redis = ensure_redis(&redis_url).await?;
    let url = postgres.url().as_str();
    let exists = Postgres::database_exists(url)
        .await
        .map_err(|err| services::postgres_error(postgres.url(), &err))?;
    if !exists {
        Postgres::create_database(url)
            .await
            .map_err(|err| services::postgres_error(postgres.url(), &err))?;
    }
    eprintln!("xtask: {}", postgres.describe());
    eprintln!("xtask: {}", redis.describe());

    let mut command = cargo_command();
    let nextest = has_nextest().await;
    if nextest {
        command.args(["nextest", "run"]);
    } else {
        command.arg("test");
    }
    // `--workspace` would override a package selection given by the caller.
    if !selects_packages(&args.args) {
        command.arg("--workspace");
    }
    command
        .args(&args.args)
        .env("DATABASE_URL", postgres.url().as_str())
        .env("REDIS_URL", redis.url().as_str());
    if nextest && std::env::var_os("CI").is_some() && std::env::var_os("NEXTEST_PROFILE").is_none()
    {
        command.env("NEXTEST_PROFILE", "ci");
    }
    let runner = if nextest {
        "cargo nextest run"
    } else {
        "cargo test"
    };
    let status = run::status(command, runner).await?;
    // Stopped before returning so that the runner's summary stays the last thing printed.
    drop(redis);
    drop(postgres);
    Ok(run::exit_code(status))
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
