//! Looking at a preview from outside the sandbox, as a browser would.

use async_trait::async_trait;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// Nothing answered (refused, reset, DNS).
    #[error("preview unreachable: {0}")]
    Unreachable(String),
    #[error("preview did not answer in time")]
    TimedOut,
}

/// The final answer after following redirects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResponse {
    pub status: u16,
    pub final_url: String,
    pub x_frame_options: Option<String>,
    pub content_security_policy: Option<String>,
}

/// An HTTP GET on a preview URL, following redirects, with a short per-request timeout.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait PreviewProbe: Send + Sync {
    async fn get(&self, url: &str) -> Result<ProbeResponse, ProbeError>;
}
