//! Scenario 1: `GET /api/generation/{id}/status` under a fixed number of keep-alive connections for a
//! fixed time, against `redis-benchmark` running `HGETALL` on one of the same hashes.

use std::time::{Duration, Instant};

use anyhow::Context;
use domain::JobId;
use serde::Serialize;
use tokio::process::Command;
use url::Url;

use super::http_load;
use super::stats::Percentiles;

/// What the load generator measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    pub connections: usize,
    pub duration_s: f64,
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    pub latency: Percentiles,
}

/// `connections` keep-alive connections (see [`http_load`]) read the status of the jobs in turn until
/// `duration` is up.
pub async fn load(
    base: &str,
    token: &str,
    jobs: &[JobId],
    connections: usize,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    anyhow::ensure!(!jobs.is_empty(), "no jobs to read");
    let host = http_load::address(base)?;
    let paths: Vec<String> = jobs
        .iter()
        .map(|id| format!("/api/generation/{id}/status"))
        .collect();
    let requests = http_load::get_requests(&host, &paths, &format!("Bearer {token}"));
    let started = Instant::now();
    let results = http_load::run(host, requests, connections, duration).await?;
    Ok(LoadResult::new(
        connections,
        started.elapsed().as_secs_f64(),
        results,
    ))
}

impl LoadResult {
    /// What `connections` connections measured in `duration_s` seconds (one run, or several added up).
    pub fn new(
        connections: usize,
        duration_s: f64,
        results: Vec<http_load::ConnectionResult>,
    ) -> Self {
        let errors = results.iter().map(|r| r.errors).sum();
        let latencies: Vec<u64> = results.into_iter().flat_map(|r| r.latencies).collect();
        let requests = latencies.len() as u64;
        Self {
            connections,
            duration_s,
            requests,
            errors,
            rps: requests as f64 / duration_s.max(f64::MIN_POSITIVE),
            latency: Percentiles::from_micros(latencies),
        }
    }
}

/// `redis-benchmark`'s figure for one command.
#[derive(Debug, Clone, Serialize)]
pub struct RedisBaseline {
    pub command: String,
    pub requests: u64,
    pub rps: f64,
    pub p50_ms: Option<f64>,
}

/// `redis-benchmark -c <connections> -n <requests> -q HGETALL <key>` against `redis`.
pub async fn redis_hgetall(
    redis: &Url,
    key: &str,
    connections: usize,
    requests: u64,
) -> anyhow::Result<RedisBaseline> {
    let host = redis.host_str().unwrap_or("127.0.0.1");
    let port = redis.port().unwrap_or(6379);
    let mut command = Command::new("redis-benchmark");
    command
        .args(["-h", host, "-p", &port.to_string()])
        .args(["-c", &connections.to_string(), "-n", &requests.to_string()])
        .arg("-q");
    if let Some(password) = redis.password() {
        command.args(["-a", password]);
    }
    let output = command
        .args(["HGETALL", key])
        .output()
        .await
        .context("cannot run redis-benchmark (apt-get install redis-tools)")?;
    anyhow::ensure!(
        output.status.success(),
        "redis-benchmark failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let text = String::from_utf8_lossy(&output.stdout);
    parse_redis_benchmark(&text)
        .map(|(rps, p50_ms)| RedisBaseline {
            command: "HGETALL".to_owned(),
            requests,
            rps,
            p50_ms,
        })
        .with_context(|| format!("cannot read redis-benchmark's output: {text:?}"))
}

/// The last `…: 123456.79 requests per second, p50=0.191 msec` line (progress lines end in `\r`).
fn parse_redis_benchmark(text: &str) -> Option<(f64, Option<f64>)> {
    let line = text
        .split(['\r', '\n'])
        .rfind(|line| line.contains("requests per second"))?;
    let before = line.split("requests per second").next()?;
    let rps = before
        .rsplit([' ', ':'])
        .find(|s| !s.is_empty())?
        .parse()
        .ok()?;
    let p50 = line
        .split("p50=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    Some((rps, p50))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_final_redis_benchmark_line() {
        let text = "HGETALL k: rps=0.0 (overall: nan) avg_msec=nan\r\
                    HGETALL k: 95238.10 requests per second, p50=0.263 msec                    \n\n";
        let (rps, p50) = parse_redis_benchmark(text).unwrap();
        assert!((rps - 95238.10).abs() < 1e-6);
        assert_eq!(p50, Some(0.263));
    }
}
