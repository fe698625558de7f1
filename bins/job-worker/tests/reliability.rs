//! Reliability: the faults issue 6 names, against real Postgres (a fresh database per test), real Redis
//! (a random key prefix per test) and real sandboxes (a temporary LOCAL_SANDBOX_ROOT), with the production
//! E2B client against the E2B-compatible local server where faults are injected. The reconciler's steps
//! are called directly, so nothing waits for a loop interval; every wait polls a condition with a deadline.
//!
//! Run with `DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo test -p job-worker --test
//! reliability` (REDIS_URL defaults to the local server; tests that run the template app need node).

mod support;

#[path = "reliability/fakes.rs"]
mod fakes;
#[path = "reliability/harness.rs"]
mod harness;
#[path = "reliability/services.rs"]
mod services;

#[path = "reliability/drift.rs"]
mod drift;
#[path = "reliability/leases.rs"]
mod leases;
#[path = "reliability/pauses.rs"]
mod pauses;
#[path = "reliability/postgres.rs"]
mod postgres;
#[path = "reliability/provider_errors.rs"]
mod provider_errors;
#[path = "reliability/redis_loss.rs"]
mod redis_loss;
#[path = "reliability/resume.rs"]
mod resume;
