//! HTTP-level tests of the api-server against real Postgres and Redis (one test binary).

mod auth;
mod bad_input;
mod connections;
mod events;
mod generation;
mod health;
mod helpers;
mod jobs;
mod lifecycle;
mod logs;
mod projects;
mod sse_reader;
mod support;
