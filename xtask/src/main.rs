//! Slipway's project automation, in Rust rather than shell: `cargo xtask <command>` (an alias in
//! `.cargo/config.toml` runs this binary).
//!
//! - `migrate [status|down [N]]`: the database schema, from the embedded `migrations/`.
//! - `test [ARGS]`: make sure Postgres and Redis are there (starting private ones if not), then run the
//!   workspace's tests.
//! - `ci`: formatting, clippy and `test`, as CI runs them.
//! - `dev`: services, schema, and both binaries running locally, with a ready-to-use dev token (local
//!   sandboxes need Node.js: it stops with one line saying what to install when node or npm is missing).
//! - `demo`: one build through the API `dev` runs, from start to READY and paused.
//! - `bench [--quick] [--only core|gateway]`: the benchmark of issue 7; writes `target/bench/report.md` and
//!   `report.json`.
//! - `chaos [--quick] [--seed N]`: api-server and workers under seeded faults, checked for lost jobs,
//!   false pauses, leaks and Redis drift; exits non-zero when a target is missed.
//!
//! Every command prints one `error: …` line and exits non-zero when it fails.

mod bench;
mod chaos;
mod demo;
mod dev;
mod migrate;
mod node;
mod run;
mod services;
mod test;
mod token;
mod workspace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Slipway's project automation.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply pending migrations (or `status`, `down [N]`).
    Migrate(migrate::MigrateArgs),
    /// Ensure Postgres and Redis, then run the workspace's tests; extra arguments go to the test runner.
    Test(test::TestArgs),
    /// `cargo fmt --check`, clippy with warnings denied, then `test`.
    Ci,
    /// Run api-server and job-worker locally against Postgres and Redis until Ctrl-C.
    Dev,
    /// With `dev` running: start a build and follow it until it is READY and its sandbox paused.
    Demo,
    /// Measure Slipway against baselines taken in the same run; writes target/bench/report.{md,json}.
    Bench(bench::BenchArgs),
    /// Kill, stall and cut off Slipway's processes under load, then check that nothing was lost.
    Chaos(chaos::ChaosArgs),
}

/// The bench runs job-worker's loop in this process: the same allocator as the job-worker binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Migrate(args) => migrate::run(args).await,
        Command::Test(args) => test::run(args).await,
        Command::Ci => test::ci().await,
        Command::Dev => dev::run().await,
        Command::Demo => demo::run().await,
        Command::Bench(args) => bench::run(args).await,
        Command::Chaos(args) => chaos::run(args).await,
    };
    match outcome {
        Ok(code) => code,
        Err(err) => {
            // `{:#}` puts the whole context chain on one line: the one clear line the user reads.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
