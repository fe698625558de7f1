//! The connection pool.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::PgError;

/// Pool sizing and timeouts. The defaults suit one api-server or job-worker process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    pub max_connections: u32,
    pub min_connections: u32,
    /// How long a query waits for a free connection before it fails as `Unavailable`.
    pub acquire_timeout: Duration,
    /// Idle connections above `min_connections` are closed after this long.
    pub idle_timeout: Duration,
    /// Connections are recycled after this long (so failovers and server restarts are picked up).
    pub max_lifetime: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_connections: 10,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(1800),
        }
    }
}

/// Connects with [`PoolConfig::default`]. Opens one connection at once, so a wrong URL or a database that
/// is down fails here, at start, rather than on the first request.
pub async fn connect(url: &str) -> Result<PgPool, PgError> {
    connect_with(url, &PoolConfig::default()).await
}

/// Connects with the given pool settings (see [`connect`]).
#[tracing::instrument(skip_all, fields(max_connections = config.max_connections), err)]
pub async fn connect_with(url: &str, config: &PoolConfig) -> Result<PgPool, PgError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(PgError::InvalidUrl)?
        .application_name("slipway");
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        .min_connections(config.min_connections)
        .acquire_timeout(config.acquire_timeout)
        .idle_timeout(Some(config.idle_timeout))
        .max_lifetime(Some(config.max_lifetime))
        // A ping before a connection leaves the pool, so that none broken while idle (a Postgres restart,
        // a backend terminated) is handed out. The repository keeps connections between statements itself
        // (see `connections`), so this round trip is paid only when it takes one from the pool, not per
        // statement.
        .test_before_acquire(true)
        .connect_with(options)
        .await
        .map_err(PgError::Connect)
}
