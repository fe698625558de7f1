//! Shared test harness: a client, and a random key prefix whose keys are deleted when the test ends (also on
//! panic).

#![allow(dead_code)]

pub mod cluster;

use std::future::Future;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use domain::{Job, JobId, JobStatus, ProjectId, SandboxState, Tier, UserId};
use futures::TryStreamExt;
use infra_redis::{connect, Client};

use fred::prelude::{ClientLike, KeysInterface};

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A fresh prefix; its keys are deleted on drop.
pub struct TestRedis {
    pub client: Client,
    pub prefix: String,
}

impl TestRedis {
    pub async fn new() -> Self {
        let client = connect(&redis_url()).await.expect("redis is reachable");
        let prefix = format!("test-{}", uuid::Uuid::new_v4());
        Self { client, prefix }
    }
}

async fn delete_prefix(client: &Client, prefix: &str) {
    let keys: Vec<_> = client
        .scan_buffered(format!("{prefix}:*"), Some(500), None)
        .try_collect()
        .await
        .expect("scan");
    for key in keys {
        let _: () = client.del(key).await.expect("del");
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        // Drop cannot await; a thread with its own runtime cleans up even when the test panicked.
        let prefix = self.prefix.clone();
        let cleaned = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let client = connect(&redis_url()).await.expect("redis is reachable");
                delete_prefix(&client, &prefix).await;
                let _ = client.quit().await;
            });
        })
        .join();
        if cleaned.is_err() && !std::thread::panicking() {
            panic!("test keys under {} were not deleted", self.prefix);
        }
    }
}

/// Polls `check` until it returns `Some`, failing the test after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A queued job with every required field set.
pub fn job() -> Job {
    let t = Utc.timestamp_opt(1_764_000_000, 123_456_000).unwrap();
    Job {
        id: JobId::new(),
        project_id: ProjectId::new(),
        user_id: UserId::try_from("user_live").unwrap(),
        tier: Tier::CtoScale,
        goal: "a habit tracker".into(),
        status: JobStatus::Queued,
        status_message: Some("Queued...".into()),
        error_message: None,
        debug_id: None,
        attempts: 0,
        sandbox_id: None,
        preview_url: None,
        workspace_path: None,
        build_version: Some("build_v0_1".into()),
        sandbox_state: SandboxState::None,
        sandbox_state_version: 0,
        paused_at: None,
        resumed_at: None,
        sandbox_expires_at: None,
        last_activity_at: None,
        enqueued_at: Some(t),
        started_at: None,
        completed_at: None,
        created_at: t,
        updated_at: t,
        duration_seconds: None,
    }
}

/// The job one step later: a newer `updated_at` and the given status.
pub fn advanced(j: &Job, status: JobStatus) -> Job {
    Job {
        status,
        status_message: Some(status.label().into()),
        updated_at: j.updated_at + chrono::Duration::milliseconds(1),
        ..j.clone()
    }
}
