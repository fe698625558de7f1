//! End-to-end tests of Slipway: the api-server and the job-worker in-process over real Postgres, Redis and
//! sandbox runtimes (local, and E2B through the E2B-compatible local server). The tests live in
//! `tests/e2e/`; this library is empty.
