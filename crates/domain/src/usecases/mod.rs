//! The use cases, written against the ports: the build pipeline, pause after READY, resume, snapshot and
//! the reconciler's steps.

pub mod activity;
pub mod cancel;
pub mod framework;
pub mod logs;
pub mod output_tail;
pub mod pipeline;
pub mod preview;
pub mod project;
pub mod reconcile;
pub mod resume;
pub mod snapshot;
pub mod submit;
