//! Talking to a running Slipway: HTTP calls with tokens, the job row, the runtime's view, faults.

use std::time::Duration;

use fred::prelude::ClientLike;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

use domain::ports::SandboxError;
use domain::{JobId, SandboxId};
use infra_local::e2b_server::FaultConfig;

use super::{redis_url, start_worker, TestApp, E2B_API_KEY, POLL_EVERY, SECRET};

/// A signed HS256 token for `user`.
pub fn token(user: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    encode(
        &Header::default(),
        &json!({ "sub": user, "exp": now + 600, "nbf": now - 10 }),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encode token")
}

/// The job row's sandbox columns.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SandboxRow {
    pub status: String,
    pub sandbox_id: Option<String>,
    pub sandbox_state: String,
    pub sandbox_paused: bool,
    pub preview_url: Option<String>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str, user: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token(user))
            .send()
            .await
            .expect("request")
    }

    pub async fn post(&self, path: &str, user: &str, body: Option<Value>) -> reqwest::Response {
        let req = self.client.post(self.url(path)).bearer_auth(token(user));
        let req = match body {
            Some(body) => req.json(&body),
            None => req,
        };
        req.send().await.expect("request")
    }

    /// Creates a project and starts a build of `goal` on it; returns the job id.
    pub async fn start_build(&self, user: &str, goal: &str) -> JobId {
        let resp = self
            .post("/api/projects", user, Some(json!({"name": "e2e app"})))
            .await;
        assert_eq!(resp.status(), 201, "create project");
        let project: Value = resp.json().await.expect("json");
        let project_id = project["id"].as_str().expect("project id").to_owned();
        let resp = self
            .post(
                "/api/generation/start",
                user,
                Some(json!({"project_id": project_id, "goal": goal})),
            )
            .await;
        assert_eq!(resp.status(), 201, "start build");
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["status"], "queued");
        JobId::parse(body["job_id"].as_str().expect("job_id")).expect("uuid")
    }

    pub async fn status(&self, job: JobId, user: &str) -> Value {
        let resp = self
            .get(&format!("/api/generation/{job}/status"), user)
            .await;
        assert_eq!(resp.status(), 200, "status");
        resp.json().await.expect("status json")
    }

    /// Polls the status until `done` holds, failing after `deadline`.
    pub async fn wait_status(
        &self,
        job: JobId,
        user: &str,
        deadline: Duration,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let end = tokio::time::Instant::now() + deadline;
        let mut last;
        let found = loop {
            last = self.status(job, user).await;
            if done(&last) {
                break true;
            }
            if tokio::time::Instant::now() >= end {
                break false;
            }
            tokio::time::sleep(POLL_EVERY).await;
        };
        assert!(
            found,
            "[{:?}] {what}: not within {deadline:?}; last status {last:#}",
            self.mode
        );
        last
    }

    pub async fn row(&self, job: JobId) -> SandboxRow {
        sqlx::query_as::<_, SandboxRow>(
            "SELECT status, sandbox_id, sandbox_state, sandbox_paused, preview_url \
             FROM jobs WHERE id = $1",
        )
        .bind(job.as_uuid())
        .fetch_one(&self.pool)
        .await
        .expect("job row")
    }

    /// Our sandboxes the runtime still has for `job`.
    pub async fn sandboxes_of(&self, job: JobId) -> Vec<SandboxId> {
        self.runtime
            .list()
            .await
            .expect("list sandboxes")
            .into_iter()
            .filter(|s| s.job_id == Some(job))
            .map(|s| s.sandbox_id)
            .collect()
    }

    /// Kills the newest worker the way a crash would: its tasks end mid-step, nothing is released or acked.
    pub async fn crash_worker(&mut self) {
        let mut worker = self.workers.pop().expect("a worker runs");
        if let Some(crash) = worker.crash.take() {
            let _ = crash.send(());
        }
        let thread = worker.thread.take().expect("worker thread");
        let ended = tokio::task::spawn_blocking(move || thread.join())
            .await
            .expect("join");
        assert!(ended.is_ok(), "worker thread panicked");
    }

    /// Starts one more worker on the same queue.
    pub fn start_another_worker(&mut self) {
        let worker = start_worker(
            self.mode,
            self.worker_args.clone(),
            self.fast_reconcile,
            self.local.clone(),
        );
        self.workers.push(worker);
    }

    /// Replaces the E2B-compatible server's faults (`None` in local mode, which has no faults to inject).
    pub async fn set_faults(&self, faults: &FaultConfig) -> Option<()> {
        let url = self.e2b_url.as_ref()?;
        let resp = self
            .client
            .post(format!("{url}/_faults"))
            .header("X-API-Key", E2B_API_KEY)
            .json(faults)
            .send()
            .await
            .expect("set faults");
        assert!(
            resp.status().is_success(),
            "faults refused: {}",
            resp.status()
        );
        Some(())
    }

    /// Deletes every Redis key of this deployment (a `FLUSHALL` that spares the tests running alongside).
    pub async fn flush_redis(&self) -> usize {
        let client = infra_redis::connect(&redis_url())
            .await
            .expect("redis is reachable");
        let n = super::delete_prefix(&client, &self.prefix).await;
        let _ = client.quit().await;
        n
    }

    /// Pids of live processes running this test's generator script.
    pub fn generator_processes(&self) -> Vec<u32> {
        let script = self.root.join("generator.sh");
        let script = script.to_string_lossy();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(script.as_ref()))
                    .unwrap_or(false)
            })
            .collect()
    }

    /// `true` when the runtime no longer has the sandbox.
    pub async fn sandbox_gone(&self, id: &SandboxId) -> bool {
        matches!(self.runtime.state(id).await, Err(SandboxError::NotFound(_)))
    }

    /// Stops the worker, the api-server and the E2B server, and kills every sandbox left. Call at the end of
    /// a test; `Drop` removes the database, the Redis keys and the directory either way.
    pub async fn shut_down(mut self) {
        for mut worker in std::mem::take(&mut self.workers) {
            worker.stop.cancel();
            let thread = worker.thread.take().expect("worker thread");
            let ended = tokio::time::timeout(
                Duration::from_secs(30),
                tokio::task::spawn_blocking(move || thread.join()),
            )
            .await;
            assert!(
                matches!(ended, Ok(Ok(Ok(Ok(()))))),
                "worker did not stop cleanly: {ended:?}"
            );
        }
        self.api_stop.cancel();
        if let Some(api) = self.api.take() {
            let ended = tokio::time::timeout(Duration::from_secs(30), api).await;
            assert!(
                matches!(ended, Ok(Ok(Ok(())))),
                "api-server did not stop cleanly: {ended:?}"
            );
        }
        self.local.shutdown_all().await;
        self.e2b_stop.cancel();
    }
}
