//! The Postgres repository against a real database: each `#[sqlx::test]` gets a fresh database, migrated
//! with `infra_pg::MIGRATOR` and dropped afterwards. Needs DATABASE_URL (a server where databases can be
//! created), e.g. postgres://postgres@127.0.0.1:5432/postgres.

mod faults;
mod helpers;
mod jobs;
mod logs;
mod projects;
mod quota;
mod sandbox;
mod setup;
mod transition;
