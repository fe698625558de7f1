//! What the scenarios run against: the `slipway_bench` database (dropped and recreated, then migrated),
//! a Redis key prefix of its own (deleted at the end), and the release api-server on a free port, with its
//! preview gateway on another.

use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use fred::prelude::{Client, KeysInterface};
use fred::types::scan::Scanner;
use futures::StreamExt;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sqlx::PgPool;
use tokio::process::{Child, Command};
use url::Url;

use crate::workspace::target_dir;

/// The benchmark's own database: dropped and recreated by every run.
pub const DATABASE: &str = "slipway_bench";
/// The HS256 secret the benchmark's api-server verifies tokens with.
pub const SECRET: &str = "slipway-bench-secret";
/// The benchmark's `PREVIEW_SECRET`: preview host labels are made with it (at least 16 bytes).
pub const PREVIEW_SECRET: &str = "slipway-bench-preview-secret";

const READY_DEADLINE: Duration = Duration::from_secs(30);
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// `server` with its path replaced by `database`.
///
/// On a loopback host with no `sslmode` given, the URL asks for `sslmode=disable`, and pgbench gets the same
/// mode ([`sslmode`]): TLS between processes of one host measures the cipher, not Slipway (it was a fifth of
/// Postgres's CPU in the throughput run), and whether it was used depended on the server's `ssl` setting.
pub fn database_url(server: &Url, database: &str) -> Url {
    let mut url = server.clone();
    url.set_path(&format!("/{database}"));
    // A `postgres:` URL's host is an opaque name to the url crate, addresses included.
    let loopback = url.host_str().is_some_and(|host| {
        host == "localhost"
            || host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    if loopback && sslmode(&url).is_none() {
        url.query_pairs_mut().append_pair("sslmode", "disable");
    }
    url
}

/// The URL's `sslmode`, for libpq tools such as pgbench (`PGSSLMODE`).
pub fn sslmode(url: &Url) -> Option<String> {
    url.query_pairs()
        .find(|(key, _)| key == "sslmode")
        .map(|(_, value)| value.into_owned())
}

/// Drops and recreates [`DATABASE`], migrates it, and returns a pool on it plus one on the server's
/// `postgres` database (to read statistics without adding to them).
pub async fn fresh_database(server: &Url) -> anyhow::Result<(PgPool, PgPool)> {
    let admin = infra_pg::connect(database_url(server, "postgres").as_str())
        .await
        .context("cannot connect to the postgres database")?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        .execute(&admin)
        .await
        .with_context(|| format!("cannot drop {DATABASE}"))?;
    sqlx::query(&format!("CREATE DATABASE {DATABASE}"))
        .execute(&admin)
        .await
        .with_context(|| format!("cannot create {DATABASE}"))?;
    let pool = infra_pg::connect_with(
        database_url(server, DATABASE).as_str(),
        &infra_pg::PoolConfig {
            max_connections: 16,
            ..infra_pg::PoolConfig::default()
        },
    )
    .await
    .with_context(|| format!("cannot connect to {DATABASE}"))?;
    infra_pg::migrate(&pool)
        .await
        .with_context(|| format!("cannot migrate {DATABASE}"))?;
    Ok((pool, admin))
}

/// A prefix no other run shares.
pub fn redis_prefix() -> String {
    format!(
        "slipway-bench-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Deletes every key under `prefix`.
pub async fn delete_prefix(client: &Client, prefix: &str) -> anyhow::Result<u64> {
    let mut deleted = 0;
    let mut pages = client.scan(format!("{prefix}:*"), Some(1000), None);
    while let Some(page) = pages.next().await {
        let mut page = page.context("cannot scan the bench keys")?;
        if let Some(keys) = page.take_results() {
            if !keys.is_empty() {
                deleted += keys.len() as u64;
                client
                    .del::<(), _>(keys)
                    .await
                    .context("cannot delete the bench keys")?;
            }
        }
    }
    Ok(deleted)
}

/// The api-server the benchmark started, stopped on [`ApiServer::stop`] (or killed on drop).
pub struct ApiServer {
    child: Child,
    pub base: String,
    /// The preview gateway's listener on 127.0.0.1 (`PREVIEW_ADDR`).
    pub preview_port: u16,
    /// `PREVIEW_DOMAIN`: `preview.localhost:{preview_port}`; a preview's host is `{label}.{preview_domain}`.
    pub preview_domain: String,
}

/// What the api-server is configured with.
pub struct ApiSettings<'a> {
    pub database_url: &'a Url,
    pub redis_url: &'a Url,
    pub redis_prefix: &'a str,
}

impl ApiServer {
    /// Starts `target/release/api-server` with unlimited tiers and a large queue cap, the preview gateway
    /// on (public access, on its own free port), logs to `target/bench/api-server.log`, and waits until
    /// `/healthz` answers.
    pub async fn start(settings: &ApiSettings<'_>, log_dir: &Path) -> anyhow::Result<Self> {
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let preview_port = free_port()?;
        let preview_domain = format!("preview.localhost:{preview_port}");
        let program = target_dir().join("release").join("api-server");
        let log_path = log_dir.join("api-server.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let unlimited = "1000000000";
        let child = Command::new(&program)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DATABASE_URL", settings.database_url.as_str())
            .env("REDIS_URL", settings.redis_url.as_str())
            .env("REDIS_PREFIX", settings.redis_prefix)
            .env("API_ADDR", &addr)
            .env("JWT_HS256_SECRET", SECRET)
            .env("QUEUE_CAP", unlimited)
            .env("DAILY_JOBS_BOOTSTRAPPER", unlimited)
            .env("DAILY_JOBS_PARTNER", unlimited)
            .env("DAILY_JOBS_CTO_SCALE", unlimited)
            // A log line per request would measure the logger: warnings only.
            .env("RUST_LOG", "warn")
            .env("LOG_FORMAT", "json")
            .env("LOCAL_SANDBOX_ROOT", sandbox_root(log_dir))
            .env("PREVIEW_ADDR", format!("127.0.0.1:{preview_port}"))
            .env("PREVIEW_DOMAIN", &preview_domain)
            .env("PREVIEW_SECRET", PREVIEW_SECRET)
            .env("PREVIEW_ACCESS", "public")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("cannot share the log file")?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let mut server = Self {
            child,
            base: format!("http://{addr}"),
            preview_port,
            preview_domain,
        };
        server.wait_until_ready(&log_path).await?;
        Ok(server)
    }

    async fn wait_until_ready(&mut self, log: &Path) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .context("cannot build an HTTP client")?;
        let url = format!("{}/healthz", self.base);
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().context("cannot poll api-server")? {
                anyhow::bail!(
                    "api-server exited ({status}) at start; see {}",
                    log.display()
                );
            }
            if let Ok(response) = client.get(&url).send().await {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                anyhow::bail!("api-server did not answer {url} within {READY_DEADLINE:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The process's peak resident set (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        proc_status_mib(self.pid()?, "VmHWM:")
    }

    /// The process's resident set now (VmRSS), in MiB.
    pub fn rss_mib(&self) -> Option<f64> {
        proc_status_mib(self.pid()?, "VmRSS:")
    }

    /// The CPU time the process has used so far, all its threads (`/proc/<pid>/task/*/schedstat`, in
    /// nanoseconds), in seconds. It moves less than requests/s with what else the machine is doing.
    pub fn cpu_seconds(&self) -> Option<f64> {
        process_cpu_seconds(self.pid()?)
    }

    /// The status cache's counters from `/metrics`: `(hits, all reads)`, or `None` when not exposed.
    pub async fn status_cache_reads(&self) -> Option<(u64, u64)> {
        let text = reqwest::get(format!("{}/metrics", self.base))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        parse_status_cache_reads(&text)
    }

    /// SIGTERM, then waits (SIGKILL after a deadline).
    pub async fn stop(mut self) {
        if let Some(pid) = self.pid().and_then(|pid| i32::try_from(pid).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        if tokio::time::timeout(STOP_DEADLINE, self.child.wait())
            .await
            .is_err()
        {
            eprintln!("bench: api-server did not stop within {STOP_DEADLINE:?}; killing it");
            let _ = self.child.kill().await;
        }
    }
}

/// The CPU time process `pid` has used so far, all its threads (`/proc/<pid>/task/*/schedstat`, in
/// nanoseconds), in seconds.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let nanos: u64 = tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|line| line.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Some(nanos as f64 / 1e9)
}

/// The directory under `log_dir` the api-server keeps its local sandboxes in (`LOCAL_SANDBOX_ROOT`).
pub fn sandbox_root(log_dir: &Path) -> std::path::PathBuf {
    log_dir.join("sandboxes")
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`), in MiB.
fn proc_status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, field).map(|kib| kib / 1024.0)
}

fn parse_status_kib(status: &str, field: &str) -> Option<f64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Sums `slipway_status_cache_reads_total` by result: `(hits, all reads)`.
fn parse_status_cache_reads(metrics: &str) -> Option<(u64, u64)> {
    let mut hits = None;
    let mut all = 0u64;
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("slipway_status_cache_reads_total{") else {
            continue;
        };
        let (labels, value) = rest.split_once("} ")?;
        let n = value.trim().parse::<f64>().ok()? as u64;
        all += n;
        if labels.contains("result=\"hit\"") {
            hits = Some(n);
        }
    }
    Some((hits?, all))
}

pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("cannot find a free port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_cache_counters_are_read_from_the_metrics_text() {
        let text = "# TYPE slipway_status_cache_reads_total counter\n\
                    slipway_status_cache_reads_total{result=\"hit\"} 990\n\
                    slipway_status_cache_reads_total{result=\"miss\"} 8\n\
                    slipway_status_cache_reads_total{result=\"untracked\"} 2\n\
                    http_requests_total{route=\"/x\"} 5\n";
        assert_eq!(parse_status_cache_reads(text), Some((990, 1000)));
        assert_eq!(parse_status_cache_reads("http_requests_total 5\n"), None);
    }

    #[test]
    fn status_fields_are_read_in_kib() {
        let status = "Name:\tapi-server\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(40960.0));
        assert_eq!(parse_status_kib(status, "VmHWM:"), Some(51200.0));
        assert_eq!(parse_status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn loopback_urls_connect_without_tls_unless_told_otherwise() {
        let local = Url::parse("postgres://postgres@127.0.0.1:5432/postgres").unwrap();
        let url = database_url(&local, "slipway_bench");
        assert_eq!(url.path(), "/slipway_bench");
        assert_eq!(sslmode(&url).as_deref(), Some("disable"));

        let required = Url::parse("postgres://u@localhost/x?sslmode=require").unwrap();
        assert_eq!(
            sslmode(&database_url(&required, "b")).as_deref(),
            Some("require")
        );

        let remote = Url::parse("postgres://u@db.example.com/x").unwrap();
        assert_eq!(sslmode(&database_url(&remote, "b")), None);
    }
}
