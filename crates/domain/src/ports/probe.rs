//! Looking at a preview from outside the sandbox, as a browser would.

use std::fmt;

use async_trait::async_trait;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// Nothing answered (refused, reset, DNS).
    #[error("preview unreachable: {0}")]
    Unreachable(String),
    #[error("preview did not answer in time")]
    TimedOut,
}

/// An answer the sandbox provider's proxy gave in the dev server's place: whatever its status, the app
/// did not answer. Recognised by the adapter from the proxy's own wire format (E2B's client proxy answers
/// with fixed JSON bodies and plain-text errors), never from the status alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyAnswer {
    /// The sandbox runs but nothing listens on the port (E2B: 502 "The sandbox is running but port is
    /// not open").
    PortNotOpen,
    /// The proxy has no running sandbox of that id: gone, or paused (E2B: 502 "The sandbox was not
    /// found").
    SandboxNotFound,
    /// The proxy could not route the request to a sandbox (E2B: 400 "Invalid host", "Invalid sandbox
    /// ID", "Invalid sandbox port", "missing header"), with its message.
    BadRoute(String),
    /// Another answer of the proxy's own (too many connections, still transitioning, ...), with its
    /// message.
    Other(String),
}

impl fmt::Display for ProxyAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyAnswer::PortNotOpen => {
                f.write_str("the sandbox is running but the port is not open")
            }
            ProxyAnswer::SandboxNotFound => {
                f.write_str("the provider's proxy did not find the sandbox")
            }
            ProxyAnswer::BadRoute(message) => {
                write!(
                    f,
                    "the provider's proxy could not route the request: {message}"
                )
            }
            ProxyAnswer::Other(message) => write!(f, "the provider's proxy answered: {message}"),
        }
    }
}

/// The final answer after following redirects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResponse {
    pub status: u16,
    pub final_url: String,
    pub x_frame_options: Option<String>,
    pub content_security_policy: Option<String>,
    /// Set when the answer came from the provider's proxy rather than from the dev server.
    pub proxy: Option<ProxyAnswer>,
}

impl ProbeResponse {
    /// An answer of the dev server itself (no proxy answer), with no framing headers.
    pub fn from_app(status: u16, final_url: impl Into<String>) -> Self {
        Self {
            status,
            final_url: final_url.into(),
            x_frame_options: None,
            content_security_policy: None,
            proxy: None,
        }
    }
}

/// An HTTP GET on a preview URL, following redirects, with a short per-request timeout.
///
/// Errors: [`ProbeError::Unreachable`] when nothing answered, [`ProbeError::TimedOut`] when the answer
/// did not come in time. Any HTTP answer is `Ok`, with [`ProbeResponse::proxy`] set when the provider's
/// proxy gave it.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait PreviewProbe: Send + Sync {
    async fn get(&self, url: &str) -> Result<ProbeResponse, ProbeError>;
}
