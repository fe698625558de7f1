//! The api-server's settings: every one an environment variable and a flag. A missing or invalid one stops
//! the process at start with clap's one-line error naming it.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use domain::TierTable;

/// A setting that must never reach a log line: its `Debug` and `Display` print `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The value itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// Which sandbox runtime the API uses to kill, resume and snapshot sandboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeKind {
    Local,
    E2b,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Settings of the api-server.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "api-server", about = "Slipway's HTTP API")]
pub struct Config {
    /// Postgres connection URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/slipway"
    )]
    pub database_url: Secret,

    /// Redis connection URL.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: Secret,

    /// Prefix of every Redis key this deployment uses.
    #[arg(long, env = "REDIS_PREFIX", default_value = "slipway")]
    pub redis_prefix: String,

    /// Address the HTTP server listens on.
    #[arg(long, env = "API_ADDR", default_value = "127.0.0.1:8000")]
    pub api_addr: SocketAddr,

    /// Shared secret for HS256 tokens (development and tests).
    #[arg(long, env = "JWT_HS256_SECRET")]
    pub jwt_hs256_secret: Option<Secret>,

    /// JWKS URL for RS256 tokens (Clerk-style); keys are cached and refreshed on an unknown key id.
    #[arg(long, env = "JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,

    /// PEM public key for RS256 tokens.
    #[arg(long, env = "JWT_PUBLIC_KEY_PEM")]
    pub jwt_public_key_pem: Option<String>,

    /// Required `iss` of every token, when set.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Accepted `aud` values (comma-separated), checked when set.
    #[arg(long, env = "JWT_AUDIENCE", value_delimiter = ',')]
    pub jwt_audience: Vec<String>,

    /// Accepted `azp` values (comma-separated, e.g. the front end's origins), checked when set.
    #[arg(long, env = "JWT_AZP", value_delimiter = ',')]
    pub jwt_azp: Vec<String>,

    /// Sandbox runtime: `local` (process sandboxes on this machine) or `e2b`.
    #[arg(long, env = "SANDBOX_RUNTIME", value_enum, default_value = "local")]
    pub sandbox_runtime: RuntimeKind,

    /// E2B API key (required with `SANDBOX_RUNTIME=e2b`).
    #[arg(long, env = "E2B_API_KEY")]
    pub e2b_api_key: Option<Secret>,

    /// E2B platform API URL.
    #[arg(long, env = "E2B_API_URL", default_value = infra_e2b::DEFAULT_API_URL)]
    pub e2b_api_url: String,

    /// E2B sandbox domain.
    #[arg(long, env = "E2B_DOMAIN", default_value = infra_e2b::DEFAULT_DOMAIN)]
    pub e2b_domain: String,

    /// E2B template sandboxes are created from.
    #[arg(long, env = "E2B_TEMPLATE", default_value = "base")]
    pub e2b_template: String,

    /// envd base URL override (the local E2B-compatible server).
    #[arg(long, env = "E2B_SANDBOX_URL")]
    pub e2b_sandbox_url: Option<String>,

    /// Directory the local runtime keeps its sandboxes in.
    #[arg(
        long,
        env = "LOCAL_SANDBOX_ROOT",
        default_value = "/tmp/slipway-sandboxes"
    )]
    pub local_sandbox_root: PathBuf,

    /// Most jobs waiting in the queue at once.
    #[arg(long, env = "QUEUE_CAP", default_value_t = domain::GLOBAL_QUEUE_CAP)]
    pub queue_cap: usize,

    /// Daily job limit of the bootstrapper tier (default 5).
    #[arg(long, env = "DAILY_JOBS_BOOTSTRAPPER")]
    pub daily_jobs_bootstrapper: Option<u32>,

    /// Daily job limit of the partner tier (default 50).
    #[arg(long, env = "DAILY_JOBS_PARTNER")]
    pub daily_jobs_partner: Option<u32>,

    /// Daily job limit of the cto_scale tier (default 200).
    #[arg(long, env = "DAILY_JOBS_CTO_SCALE")]
    pub daily_jobs_cto_scale: Option<u32>,

    /// Deadline of one request in seconds (event streams excepted).
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,

    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,
}

impl Config {
    /// The tier table: the defaults of the domain with this deployment's overrides.
    pub fn tiers(&self) -> TierTable {
        let mut t = TierTable {
            queue_cap: self.queue_cap,
            ..TierTable::default()
        };
        if let Some(n) = self.daily_jobs_bootstrapper {
            t.bootstrapper.daily_jobs = n;
        }
        if let Some(n) = self.daily_jobs_partner {
            t.partner.daily_jobs = n;
        }
        if let Some(n) = self.daily_jobs_cto_scale {
            t.cto_scale.daily_jobs = n;
        }
        t
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn secrets_never_print() {
        let c = Config::parse_from([
            "api-server",
            "--jwt-hs256-secret",
            "hunter2",
            "--database-url",
            "postgres://u:pw@h/db",
        ]);
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"));
        assert!(!shown.contains("pw@"));
    }

    #[test]
    fn tier_overrides_apply() {
        let c = Config::parse_from([
            "api-server",
            "--queue-cap",
            "1",
            "--daily-jobs-partner",
            "7",
        ]);
        let t = c.tiers();
        assert_eq!(t.queue_cap, 1);
        assert_eq!(t.partner.daily_jobs, 7);
        assert_eq!(t.bootstrapper.daily_jobs, 5);
    }
}
