//! What both binaries share between their settings and their adapters: secrets that never print, log
//! setup, the sandbox runtime (metered) and tier limits as settings, the package.json parser the domain's
//! use cases are given, and the Prometheus recorder. One place, so api-server and job-worker cannot drift
//! apart (they must agree on the runtime and on the tier limits the queue enforces).

mod metered;
pub mod metrics;
mod package_json;
mod runtime;
mod secret;
mod telemetry;
mod tiers;

pub use package_json::JsonPackageParser;
pub use runtime::{RuntimeArgs, RuntimeKind, RuntimeSetupError};
pub use secret::Secret;
pub use telemetry::{init_telemetry, LogFormat};
pub use tiers::TierArgs;
