//! The gateway's settings, checked once at start: the preview domain, the secret, the access mode and the
//! wake timings.

use std::net::SocketAddr;
use std::time::Duration;

use domain::gateway::PreviewSecret;

use super::links::PreviewLinks;

/// A secret shorter than this is refused: labels and tokens are only as strong as their key.
const MIN_SECRET_BYTES: usize = 16;
/// How long the token in an owner's `preview_url` opens the preview: long enough to click it.
pub const TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
/// How long the cookie a token is exchanged for lasts.
pub const COOKIE_TTL: Duration = Duration::from_secs(12 * 60 * 60);

/// `PREVIEW_ACCESS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Access {
    /// The (unguessable) preview host is enough.
    Public,
    /// The owner's signed token, then a cookie on the preview host.
    Signed,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("PREVIEW_SECRET is required when PREVIEW_ADDR is set")]
    MissingSecret,
    #[error("PREVIEW_SECRET must be at least {MIN_SECRET_BYTES} bytes")]
    WeakSecret,
    #[error("PREVIEW_DOMAIN must be a host name with an optional port, like preview.example.com or preview.localhost:8001, not {0:?}")]
    BadDomain(String),
}

/// Everything the gateway and the API's preview URLs need.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub addr: SocketAddr,
    pub links: PreviewLinks,
    /// A browser navigation waits this long for a wake before the "waking up" page.
    pub wake_page_after: Duration,
    /// The longest any request waits for a wake.
    pub wake_wait: Duration,
    /// How often activity is written and sockets of sleeping sandboxes are closed.
    pub flush_every: Duration,
}

impl GatewayConfig {
    pub fn new(
        addr: SocketAddr,
        domain: &str,
        secret: &str,
        access: Access,
        wake_page_after: Duration,
        wake_wait: Duration,
    ) -> Result<Self, ConfigError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(ConfigError::WeakSecret);
        }
        let links = PreviewLinks::new(domain, PreviewSecret::new(secret), access)
            .ok_or_else(|| ConfigError::BadDomain(domain.to_owned()))?;
        Ok(Self {
            addr,
            links,
            wake_page_after,
            wake_wait,
            flush_every: Duration::from_secs(3),
        })
    }
}
