//! Connecting to Redis.

use std::time::Duration;

use fred::prelude::{Builder, ClientLike, Config, ReconnectPolicy};

use crate::Client;

/// Where Redis is and the prefix every key of this deployment lives under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    pub url: String,
    pub prefix: String,
}

impl RedisConfig {
    pub fn new(url: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: prefix.into(),
        }
    }

    /// Connects to [`Self::url`]; see [`connect`].
    pub async fn connect(&self) -> Result<Client, ConnectError> {
        connect(&self.url).await
    }
}

/// Why no client could be built.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid redis url")]
    InvalidUrl(#[source] fred::error::Error),
    #[error("could not connect to redis")]
    Connect(#[source] fred::error::Error),
}

/// A builder with `client`'s settings (server, connection, performance, reconnect policy), for the extra
/// connections a subscriber or a tracking cache needs.
pub(crate) fn builder_like(client: &Client) -> Builder {
    let mut builder = Builder::from_config(client.client_config());
    builder.set_connection_config(client.connection_config().clone());
    builder.set_performance_config(client.perf_config());
    if let Some(policy) = client.client_reconnect_policy() {
        builder.set_policy(policy);
    }
    builder
}

/// Every command gets at most this long: a stuck Redis surfaces as `Unavailable` instead of a hung request.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds a client for `url` (`redis://[user:pass@]host:port[/db]`) and waits for its first connection.
/// After that it reconnects on its own with exponential backoff (100 ms up to 5 s).
pub async fn connect(url: &str) -> Result<Client, ConnectError> {
    let config = Config::from_url(url).map_err(ConnectError::InvalidUrl)?;
    let client = Builder::from_config(config)
        .with_performance_config(|perf| perf.default_command_timeout = COMMAND_TIMEOUT)
        .with_connection_config(|conn| conn.connection_timeout = COMMAND_TIMEOUT)
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .build()
        .map_err(ConnectError::InvalidUrl)?;
    client.init().await.map_err(ConnectError::Connect)?;
    Ok(client)
}
