//! Local sandboxes: the embedded default runtime (a directory plus process groups per sandbox), the
//! built-in code generators, and an E2B-compatible server over local sandboxes so that the production E2B
//! client is exercised end to end without the internet.

pub mod generators;
pub mod runtime;

pub use generators::{CommandGenerator, TemplateGenerator};
pub use runtime::{LocalRuntime, LOGICAL_WORKSPACE};
pub mod e2b_server;
