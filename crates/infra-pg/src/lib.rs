//! Postgres, the system of record: the durable job and project rows behind
//! [`domain::ports::JobRepository`], implemented with sqlx.
//!
//! Every status change is a compare-and-set (`UPDATE … WHERE id = $1 AND status = $expected`), every
//! sandbox state change is guarded by `sandbox_state_version`, and build versions are assigned under a
//! lock on the project row, so concurrent builds of one project never share a version. A statement whose
//! failure passes (a connection closed or terminated under it, a serialization failure, a deadlock) is
//! retried within a bound, and a build's writes are fenced by its attempt. Queries are
//! checked at run time (`sqlx::query`), not at compile time: no database is needed to build this crate.

mod connections;
mod error;
mod job_repository;
mod jobs;
mod log_archive;
mod migrator;
mod pool;
mod project_queries;
mod quota;
mod retry;
mod rows;
mod sandbox;
mod transition;

pub use error::PgError;
pub use job_repository::PgJobRepository;
pub use jobs::{count_jobs, JobCounts};
pub use log_archive::PgLogArchive;
pub use migrator::{migrate, MIGRATOR};
pub use pool::{connect, connect_with, PoolConfig};
pub use sqlx::PgPool;
