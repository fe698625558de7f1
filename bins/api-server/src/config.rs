//! The api-server's settings: every one an environment variable and a flag. A missing or invalid one stops
//! the process at start with clap's one-line error naming it.

use std::net::SocketAddr;
use std::time::Duration;

use domain::TierTable;

pub use bin_support::{LogFormat, RuntimeArgs, RuntimeKind, Secret, TierArgs};

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

    /// The runtime the worker builds in: the api-server cancels, resumes and snapshots in it.
    #[command(flatten)]
    pub runtime: RuntimeArgs,

    #[command(flatten)]
    pub limits: TierArgs,

    /// Deadline of one request in seconds (event streams excepted).
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,

    /// A request's headers must arrive within this many seconds of the server waiting for them (a new
    /// connection, or a keep-alive one after its last answer); else the connection is closed.
    #[arg(long, env = "HTTP_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub http_header_timeout_secs: u64,

    /// A request's body must arrive within this many seconds of its headers; else 408.
    #[arg(long, env = "HTTP_BODY_TIMEOUT_SECS", default_value_t = 10)]
    pub http_body_timeout_secs: u64,

    /// Most connections open at once (lowered to fit the open-file limit); at the cap the oldest idle
    /// connection is closed to admit a new one.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", default_value_t = 4096)]
    pub http_max_connections: usize,

    /// How long a resume call waits for the sandbox, in seconds: past it, the call answers 503
    /// `sandbox_unreachable` while the resume goes on (the next call joins it). Under the front end's 30 s
    /// proxy.
    #[arg(long, env = "RESUME_ANSWER_WITHIN_SECS", default_value_t = 25)]
    pub resume_answer_within_secs: u64,

    /// The preview gateway's own listener (`0.0.0.0:8001`); off when unset. It can run as its own
    /// deployment of this binary: the same settings, only this listener exposed.
    #[arg(long, env = "PREVIEW_ADDR")]
    pub preview_addr: Option<SocketAddr>,

    /// The public suffix of preview hosts, with its port when that is not the scheme's default:
    /// `preview.example.com`, `preview.localhost:8001`. https, except for `localhost` suffixes.
    #[arg(long, env = "PREVIEW_DOMAIN", default_value = "preview.localhost:8001")]
    pub preview_domain: String,

    /// The key preview host labels and signed tokens are made with. Required with `PREVIEW_ADDR`; every
    /// process of a deployment must share it.
    #[arg(long, env = "PREVIEW_SECRET")]
    pub preview_secret: Option<Secret>,

    /// `public`: a preview host (unguessable) opens the preview; `signed`: only with the owner's
    /// short-lived token, exchanged for a cookie on that host.
    #[arg(long, env = "PREVIEW_ACCESS", value_enum, default_value = "public")]
    pub preview_access: crate::gateway::Access,

    /// A browser navigation waits this many milliseconds for a wake before it gets the "waking up" page
    /// (which retries by itself).
    #[arg(long, env = "PREVIEW_WAKE_PAGE_AFTER_MS", default_value_t = 1500)]
    pub preview_wake_page_after_ms: u64,

    /// Longest a request waits for a wake (a non-browser client's, or one arriving during a wake) before
    /// it gets 503 with `Retry-After`.
    #[arg(long, env = "PREVIEW_WAKE_WAIT_SECS", default_value_t = 20)]
    pub preview_wake_wait_secs: u64,

    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,
}

impl Config {
    /// The tier table: the defaults of the domain with this deployment's overrides.
    pub fn tiers(&self) -> TierTable {
        self.limits.tiers()
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// The server's connection limits, the cap fitted under `file_limit` (the open-file limit).
    pub fn serve_limits(&self, file_limit: Option<u64>) -> crate::ServeLimits {
        crate::ServeLimits {
            header_timeout: Duration::from_secs(self.http_header_timeout_secs),
            body_timeout: Duration::from_secs(self.http_body_timeout_secs),
            max_connections: crate::serve::file_limit::connection_cap(
                self.http_max_connections,
                file_limit,
            ),
        }
    }

    /// The preview gateway's settings, when `PREVIEW_ADDR` turns it on.
    pub fn gateway(
        &self,
    ) -> Result<Option<crate::gateway::GatewayConfig>, crate::gateway::ConfigError> {
        let Some(addr) = self.preview_addr else {
            return Ok(None);
        };
        let secret = self
            .preview_secret
            .as_ref()
            .ok_or(crate::gateway::ConfigError::MissingSecret)?;
        crate::gateway::GatewayConfig::new(
            addr,
            &self.preview_domain,
            secret.expose(),
            self.preview_access,
            Duration::from_millis(self.preview_wake_page_after_ms),
            Duration::from_secs(self.preview_wake_wait_secs),
        )
        .map(Some)
    }

    /// How long a resume call waits before answering 503 while it goes on.
    pub fn resume_answer_within(&self) -> Duration {
        Duration::from_secs(self.resume_answer_within_secs)
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
