//! The use cases, written against the ports: the build pipeline, pause after READY, resume, snapshot and
//! the reconciler's steps.

pub mod framework;
pub mod preview;
