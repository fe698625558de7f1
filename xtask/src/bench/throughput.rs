//! Scenario 2 (job throughput) and 3 (pause bookkeeping): jobs submitted through the API, built by the
//! in-process job-worker run loop on the instant runtime until every one is READY and paused; the store counters
//! diffed around it; `pgbench` on a one-row update as the Postgres baseline.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use domain::ProjectId;
use serde::Serialize;
use sqlx::PgPool;
use tokio::process::Command;
use url::Url;

use super::http_load::{address, post_json_requests, send_each};
use super::stats::{micros, Percentiles, OWN_COMMITS};

/// Submissions in flight at once.
const SUBMITTING: usize = 32;
/// How often the runtime's pause count is read.
const TICK: Duration = Duration::from_millis(2);
/// How often Postgres is asked while some jobs have not paused yet (a failed job never pauses). Each ask
/// counts every job of the run, and its CPU would be charged to Slipway's figures.
const POLL: Duration = Duration::from_millis(500);

/// How the jobs went.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub jobs: usize,
    pub submit_s: f64,
    pub total_s: f64,
    pub jobs_per_s: f64,
    pub ready_paused: i64,
    pub failed: i64,
}

/// Submits `count` jobs round-robin over `projects` with `POST /api/generation/start`, from the load
/// generator's thread (requests formatted before the first is sent, as for the status reads).
pub async fn submit(
    base: &str,
    token: &str,
    projects: &[ProjectId],
    count: usize,
) -> anyhow::Result<()> {
    let addr = address(base)?;
    let bodies: Vec<String> = (0..count)
        .map(|n| {
            serde_json::json!({
                "project_id": projects[n % projects.len()].to_string(),
                "goal": format!("benchmark app number {n}"),
            })
            .to_string()
        })
        .collect();
    let requests = post_json_requests(
        &addr,
        "/api/generation/start",
        &format!("Bearer {token}"),
        &bodies,
    );
    let failures = send_each(addr, requests, SUBMITTING, 201).await?;
    if let Some(first) = failures.first() {
        anyhow::bail!(
            "{} of {count} submissions failed; first: {first}",
            failures.len()
        );
    }
    Ok(())
}

/// Waits until every job of `projects` is READY and paused (or failed) in Postgres, up to `deadline`.
/// `paused` is the runtime's count of pauses: once it reaches `count`, Postgres is asked every [`TICK`] until
/// the last paused write is there; before that, every [`POLL`].
pub async fn wait_done(
    pool: &PgPool,
    projects: &[ProjectId],
    count: usize,
    paused: impl Fn() -> u64,
    started: Instant,
    submit_s: f64,
    deadline: Duration,
) -> anyhow::Result<Run> {
    let ids: Vec<uuid::Uuid> = projects.iter().map(ProjectId::as_uuid).collect();
    let mut asked = Instant::now();
    loop {
        let all_paused = usize::try_from(paused()).unwrap_or(usize::MAX) >= count;
        if !all_paused && asked.elapsed() < POLL && started.elapsed() < deadline {
            tokio::time::sleep(TICK).await;
            continue;
        }
        asked = Instant::now();
        let (ready_paused, failed): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'ready' AND sandbox_paused), \
                    count(*) FILTER (WHERE status = 'failed') \
             FROM jobs WHERE project_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_one(pool)
        .await
        .context("cannot count finished jobs")?;
        OWN_COMMITS.fetch_add(1, Ordering::Relaxed);
        let total_s = started.elapsed().as_secs_f64();
        if usize::try_from(ready_paused + failed).unwrap_or(0) >= count {
            return Ok(Run {
                jobs: count,
                submit_s,
                total_s,
                jobs_per_s: count as f64 / total_s,
                ready_paused,
                failed,
            });
        }
        anyhow::ensure!(
            started.elapsed() < deadline,
            "only {ready_paused} of {count} jobs were READY and paused ({failed} failed) after {deadline:?}"
        );
        tokio::time::sleep(TICK).await;
    }
}

/// Per job, from the READY write (`completed_at`) to the paused write (`paused_at`), both stamped by
/// Postgres, minus `runtime_pause` (the runtime's own mean pause time).
pub async fn pause_delays(
    pool: &PgPool,
    projects: &[ProjectId],
    runtime_pause: Duration,
) -> anyhow::Result<Percentiles> {
    let ids: Vec<uuid::Uuid> = projects.iter().map(ProjectId::as_uuid).collect();
    let delays: Vec<f64> = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM (paused_at - completed_at))::float8 \
         FROM jobs WHERE project_id = ANY($1) AND sandbox_paused AND completed_at IS NOT NULL",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await
    .context("cannot read the pause timestamps")?;
    OWN_COMMITS.fetch_add(1, Ordering::Relaxed);
    let runtime = runtime_pause.as_secs_f64();
    let samples = delays
        .into_iter()
        .map(|s| micros(Duration::from_secs_f64((s - runtime).max(0.0))))
        .collect();
    Ok(Percentiles::from_micros(samples))
}

/// The Postgres baseline: transactions per second of a one-row `UPDATE` on a tiny table.
#[derive(Debug, Clone, Serialize)]
pub struct PgbenchResult {
    pub clients: u32,
    pub seconds: u64,
    pub tps: f64,
}

/// Creates a 100-row table and runs `pgbench -n -c 8 -j 2 -T <seconds>` updating one random row per
/// transaction.
pub async fn pgbench(
    pool: &PgPool,
    database: &Url,
    dir: &Path,
    seconds: u64,
) -> anyhow::Result<PgbenchResult> {
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS bench_pgbench; \
         CREATE TABLE bench_pgbench (id int PRIMARY KEY, n bigint NOT NULL); \
         INSERT INTO bench_pgbench SELECT g, 0 FROM generate_series(1, 100) g;",
    )
    .execute(pool)
    .await
    .context("cannot create the pgbench table")?;
    let script = dir.join("pgbench_update.sql");
    std::fs::write(
        &script,
        "\\set id random(1, 100)\nUPDATE bench_pgbench SET n = n + 1 WHERE id = :id;\n",
    )
    .with_context(|| format!("cannot write {}", script.display()))?;
    let clients = 8;
    let mut command = Command::new("pgbench");
    command
        .args([
            "-n",
            "-c",
            &clients.to_string(),
            "-j",
            "2",
            "-T",
            &seconds.to_string(),
        ])
        .arg("-f")
        .arg(&script)
        .args(["-h", database.host_str().unwrap_or("127.0.0.1")])
        .args(["-p", &database.port().unwrap_or(5432).to_string()])
        .args([
            "-U",
            if database.username().is_empty() {
                "postgres"
            } else {
                database.username()
            },
        ])
        .arg(database.path().trim_start_matches('/'));
    if let Some(password) = database.password() {
        command.env("PGPASSWORD", password);
    }
    if let Some(mode) = super::stack::sslmode(database) {
        command.env("PGSSLMODE", mode);
    }
    let output = command
        .output()
        .await
        .context("cannot run pgbench (apt-get install postgresql-contrib)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "pgbench failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let tps =
        parse_pgbench(&text).with_context(|| format!("cannot read pgbench's output: {text:?}"))?;
    Ok(PgbenchResult {
        clients,
        seconds,
        tps,
    })
}

/// `tps = 1234.567 (without initial connection time)`.
fn parse_pgbench(text: &str) -> Option<f64> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("tps = "))
        .find_map(|rest| rest.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pgbench_tps() {
        let text = "latency average = 1.2 ms\ninitial connection time = 3.1 ms\n\
                    tps = 6543.210987 (without initial connection time)\n";
        assert_eq!(parse_pgbench(text), Some(6543.210987));
    }
}
