//! Latency percentiles, and the store counters the job scenario diffs: Postgres' per-database
//! transaction and row counters, Redis' command counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use fred::prelude::{Client, ClientLike};
use serde::Serialize;
use sqlx::PgPool;

/// p50, p95, p99 and p99.9 of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub samples: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    /// From samples in microseconds (sorted here).
    pub fn from_micros(mut samples: Vec<u64>) -> Self {
        samples.sort_unstable();
        let at = |q: f64| -> f64 {
            if samples.is_empty() {
                return 0.0;
            }
            // Nearest rank: the smallest sample with at least q of the samples at or below it.
            let rank = (q * samples.len() as f64).ceil() as usize;
            let index = rank.clamp(1, samples.len()) - 1;
            samples[index] as f64 / 1000.0
        };
        Self {
            samples: samples.len(),
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: samples.last().map_or(0.0, |&m| m as f64 / 1000.0),
        }
    }
}

/// Microseconds, saturating (a sample never overflows in practice).
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Postgres' counters of one database (from `pg_stat_database` and `pg_stat_user_tables`).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PgCounters {
    pub xact_commit: i64,
    pub xact_rollback: i64,
    /// Rows inserted, updated and deleted in user tables.
    pub rows_written: i64,
    /// Sequential plus index scans started on user tables (a lower bound of the statements run).
    pub scans: i64,
}

impl PgCounters {
    pub fn minus(self, earlier: Self) -> Self {
        Self {
            xact_commit: self.xact_commit - earlier.xact_commit,
            xact_rollback: self.xact_rollback - earlier.xact_rollback,
            rows_written: self.rows_written - earlier.rows_written,
            scans: self.scans - earlier.scans,
        }
    }
}

/// Transactions the bench itself ran on the benchmark database, subtracted from the diffs.
pub static OWN_COMMITS: AtomicI64 = AtomicI64::new(0);

/// Reads the counters of `database`. `server` must be a pool on another database (so reading the
/// figures does not add to them); `bench` is a pool on `database` itself, for the per-table counters
/// (one transaction, counted in [`OWN_COMMITS`]).
pub async fn pg_counters(
    server: &PgPool,
    bench: &PgPool,
    database: &str,
) -> anyhow::Result<PgCounters> {
    let (xact_commit, xact_rollback): (i64, i64) = sqlx::query_as(
        "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = $1",
    )
    .bind(database)
    .fetch_one(server)
    .await
    .context("cannot read pg_stat_database")?;
    let (rows_written, scans): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint, \
                COALESCE(sum(COALESCE(seq_scan, 0) + COALESCE(idx_scan, 0)), 0)::bigint \
         FROM pg_stat_user_tables",
    )
    .fetch_one(bench)
    .await
    .context("cannot read pg_stat_user_tables")?;
    OWN_COMMITS.fetch_add(1, Ordering::Relaxed);
    Ok(PgCounters {
        xact_commit,
        xact_rollback,
        rows_written,
        scans,
    })
}

/// Counters that hold every transaction made so far: waits out Postgres's publishing, then reads until two
/// readings a while apart agree (bounded).
///
/// A backend publishes its counters at most once a second; what it counts within a second of its last
/// publication waits until it has been idle for `PGSTAT_IDLE_INTERVAL` (10 s in Postgres 15). A quiet second
/// proves nothing then: a 200-job quick run read 0.1 commits per job, and full runs missed the last second
/// of every backend's work.
pub async fn settled_pg_counters(
    server: &PgPool,
    bench: &PgPool,
    database: &str,
) -> anyhow::Result<PgCounters> {
    const IDLE_PUBLISH: Duration = Duration::from_secs(11);
    const QUIET: Duration = Duration::from_millis(1500);
    const DEADLINE: Duration = Duration::from_secs(30);
    let started = Instant::now();
    tokio::time::sleep(IDLE_PUBLISH).await;
    let mut last = pg_counters(server, bench, database).await?;
    loop {
        tokio::time::sleep(QUIET).await;
        let now = pg_counters(server, bench, database).await?;
        // The previous reading's own transaction may have been published in between.
        let quiet =
            now.xact_commit - last.xact_commit <= 1 && now.rows_written == last.rows_written;
        if quiet || started.elapsed() > DEADLINE {
            return Ok(now);
        }
        last = now;
    }
}

/// Redis' command counters (server-wide).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RedisCounters {
    pub total_commands: i64,
    /// Calls per command name, from `INFO commandstats`.
    pub calls: BTreeMap<String, i64>,
}

impl RedisCounters {
    pub fn minus(&self, earlier: &Self) -> Self {
        let calls = self
            .calls
            .iter()
            .map(|(name, n)| {
                (
                    name.clone(),
                    n - earlier.calls.get(name).copied().unwrap_or(0),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        Self {
            total_commands: self.total_commands - earlier.total_commands,
            calls,
        }
    }
}

pub async fn redis_counters(client: &Client) -> anyhow::Result<RedisCounters> {
    let stats: String = client
        .info(Some(fred::types::InfoKind::Stats))
        .await
        .context("cannot read INFO stats")?;
    let commandstats: String = client
        .info(Some(fred::types::InfoKind::CommandStats))
        .await
        .context("cannot read INFO commandstats")?;
    let total_commands = stats
        .lines()
        .find_map(|line| line.strip_prefix("total_commands_processed:"))
        .and_then(|n| n.trim().parse().ok())
        .context("INFO stats has no total_commands_processed")?;
    // Lines read `cmdstat_hset:calls=12,usec=…`.
    let calls = commandstats
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect();
    Ok(RedisCounters {
        total_commands,
        calls,
    })
}

/// Busy CPU time of the whole machine so far (user, nice, system, irq and softirq of `/proc/stat`), in
/// seconds: every process of a scenario together, the bench's own included.
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<f64> = stat
        .lines()
        .find_map(|line| line.strip_prefix("cpu "))?
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq, in USER_HZ (always 100 in /proc/stat).
    let busy = [0, 1, 2, 5, 6]
        .iter()
        .filter_map(|&i| fields.get(i))
        .sum::<f64>();
    Some(busy / 100.0)
}

/// CPU seconds used so far by the processes of the stack, each summed over its threads (and, for Postgres,
/// over every backend and helper process): what the whole-machine figure holds besides the host's other work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StackCpu {
    pub postgres: f64,
    pub redis: f64,
    pub api_server: f64,
    /// This process: the in-process worker, the submitting client and the bench's own polling.
    pub bench_and_worker: f64,
}

impl StackCpu {
    /// Reads `/proc/<pid>/stat` of every process: Postgres and Redis by command name, api-server by pid.
    pub fn now(api_pid: Option<u32>) -> Option<Self> {
        let mut cpu = Self::default();
        for entry in std::fs::read_dir("/proc").ok()?.filter_map(Result::ok) {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Some((comm, seconds)) = std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|stat| parse_proc_stat(&stat))
            else {
                continue;
            };
            if Some(pid) == api_pid {
                cpu.api_server += seconds;
            } else if pid == std::process::id() {
                cpu.bench_and_worker += seconds;
            } else if comm == "postgres" {
                cpu.postgres += seconds;
            } else if comm == "redis-server" {
                cpu.redis += seconds;
            }
        }
        Some(cpu)
    }

    pub fn minus(self, before: Self) -> Self {
        Self {
            postgres: self.postgres - before.postgres,
            redis: self.redis - before.redis,
            api_server: self.api_server - before.api_server,
            bench_and_worker: self.bench_and_worker - before.bench_and_worker,
        }
    }
}

/// `(command name, utime + stime in seconds)` from a `/proc/<pid>/stat` line. The name is in parentheses
/// and may itself hold spaces and parentheses, so the fields are counted from the last `)`.
fn parse_proc_stat(stat: &str) -> Option<(String, f64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After the name: state is field 3 of the line, utime field 14 and stime field 15, in USER_HZ (100).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) / 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_lines_give_the_name_and_cpu_seconds() {
        let line =
            "4242 (tokio (rt) w) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 8 0 1 2 3";
        assert_eq!(
            parse_proc_stat(line),
            Some(("tokio (rt) w".to_owned(), 3.25))
        );
        assert_eq!(parse_proc_stat("4242 (short) S 1"), None);
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let p = Percentiles::from_micros((1..=1000).rev().collect());
        assert_eq!(p.samples, 1000);
        assert!((p.p50_ms - 0.5).abs() < 1e-9);
        assert!((p.p95_ms - 0.95).abs() < 1e-9);
        assert!((p.p99_ms - 0.99).abs() < 1e-9);
        assert!((p.p999_ms - 0.999).abs() < 1e-9);
        assert!((p.max_ms - 1.0).abs() < 1e-9);
    }

    #[test]
    fn percentiles_of_nothing_are_zero() {
        let p = Percentiles::from_micros(Vec::new());
        assert_eq!(p.samples, 0);
        assert_eq!(p.p99_ms, 0.0);
    }
}
