//! The E2B client: the platform API (create, get, list, connect, pause, timeout, kill) and envd (processes over
//! the Connect protocol, files over `/files`) as a [`domain::ports::SandboxRuntime`], plus an HTTP
//! [`domain::ports::PreviewProbe`].
//!
//! Built from the spec copies in `shared/specs/e2b/` (`openapi.yml`, `envd.yaml`, `process.proto`) and held
//! to the official SDK's behaviour: secure sandboxes whose envd token is sent on every envd call, hosts
//! built as the SDK builds them, and its retry rules ([`retry`]) on every control-plane call. Every failure
//! is translated into [`domain::ports::SandboxError`] by status code, Connect error code or the shape of the
//! sandbox proxy's answers in [`error`], never by message text.

mod access;
mod config;
pub mod connect;
mod control;
mod envd;
pub mod error;
mod output;
mod probe;
mod process;
mod proxy;
mod resolve;
pub mod retry;
mod runtime;

pub use access::TrafficTokens;
pub use config::{
    ApiKey, E2bConfig, Scheme, CALL_TIMEOUT, DEFAULT_API_URL, DEFAULT_DOMAIN, ENVD_PORT,
    WORKSPACE_PATH,
};
pub use probe::HttpPreviewProbe;
pub use resolve::LocalhostResolver;
pub use runtime::{E2bRuntime, TRAFFIC_TOKEN_HEADER};
