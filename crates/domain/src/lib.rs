//! Slipway's domain: the language of the product (jobs, their statuses, sandboxes, tiers), the ports the
//! outside world is reached through, and the use cases written against those ports.
//!
//! This crate does no I/O of its own and depends on no driver crate (no sqlx, fred, reqwest or axum): the
//! `infra-*` crates implement its ports and the binaries wire them together.

pub mod event;
pub mod gateway;
pub mod goal;
pub mod ids;
pub mod job;
pub mod log;
pub mod pause_policy;
pub mod ports;
pub mod quota;
pub mod sandbox_state;
pub mod status;
pub mod tier;
pub mod usecases;

pub use event::JobEvent;
pub use goal::{JobGoal, JobGoalError};
pub use ids::{DebugId, IdError, JobId, ProjectId, SandboxId, UserId};
pub use job::{BuildVersion, Job, NewJob, NewProject, Project, ProjectStatus, ProjectSummary};
pub use pause_policy::{PausePolicy, PausePolicyError};
pub use sandbox_state::SandboxState;
pub use status::{JobStatus, UnknownStatus};
pub use tier::{Tier, TierLimits, TierTable, UnknownTier, GLOBAL_QUEUE_CAP, SCHEDULED_CAP};
