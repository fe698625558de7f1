//! Test support: a scripted sandbox runtime and probe, a Redis key prefix deleted at the end, and a
//! condition poll with a deadline.

#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use domain::ports::{
    BackgroundCommand, CommandOutput, CommandSpec, PauseOutcome, PreviewProbe, ProbeError,
    ProbeResponse, ProviderSandbox, ProviderState, SandboxError, SandboxRuntime, SandboxSpec,
};
use domain::{JobId, SandboxId};
use fred::prelude::{ClientLike, KeysInterface};
use futures::TryStreamExt;
use infra_redis::Client;

/// What happened to one scripted sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scripted {
    Running,
    Paused,
    Killed,
}

/// A runtime whose every operation succeeds at once, recording what was asked of it.
#[derive(Default)]
pub struct ScriptedRuntime {
    next: AtomicU32,
    pub sandboxes: Mutex<HashMap<String, (JobId, Scripted)>>,
    pub pause_calls: AtomicU32,
}

impl ScriptedRuntime {
    pub fn count(&self, state: Scripted) -> usize {
        let sandboxes = self.sandboxes.lock().unwrap();
        sandboxes.values().filter(|(_, s)| *s == state).count()
    }

    fn set(&self, id: &SandboxId, state: Scripted) -> Result<(), SandboxError> {
        let mut sandboxes = self.sandboxes.lock().unwrap();
        let entry = sandboxes
            .get_mut(id.as_str())
            .ok_or_else(|| SandboxError::NotFound(id.to_string()))?;
        entry.1 = state;
        Ok(())
    }
}

#[async_trait]
impl SandboxRuntime for ScriptedRuntime {
    async fn create(&self, spec: &SandboxSpec) -> Result<SandboxId, SandboxError> {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let id = SandboxId::try_from(format!("sbx-{n}")).unwrap();
        self.sandboxes
            .lock()
            .unwrap()
            .insert(id.to_string(), (spec.job_id, Scripted::Running));
        Ok(id)
    }
    async fn connect(&self, id: &SandboxId, _: Duration) -> Result<(), SandboxError> {
        self.set(id, Scripted::Running)
    }
    async fn run(&self, _: &SandboxId, _: CommandSpec) -> Result<CommandOutput, SandboxError> {
        Ok(CommandOutput::default())
    }
    async fn run_background(
        &self,
        _: &SandboxId,
        _: CommandSpec,
    ) -> Result<BackgroundCommand, SandboxError> {
        Ok(BackgroundCommand::unwatched(4242))
    }
    async fn write_files(
        &self,
        _: &SandboxId,
        _: Vec<(String, Vec<u8>)>,
    ) -> Result<(), SandboxError> {
        Ok(())
    }
    async fn read_file(&self, id: &SandboxId, _: &str) -> Result<Vec<u8>, SandboxError> {
        Err(SandboxError::NotFound(id.to_string()))
    }
    fn workspace_path(&self) -> String {
        "/home/user/project".into()
    }
    async fn preview_url(&self, id: &SandboxId, port: u16) -> Result<String, SandboxError> {
        Ok(format!("http://{port}-{id}.preview.test/"))
    }
    async fn pause(&self, id: &SandboxId) -> Result<PauseOutcome, SandboxError> {
        self.pause_calls.fetch_add(1, Ordering::SeqCst);
        self.set(id, Scripted::Paused)?;
        Ok(PauseOutcome::Paused)
    }
    async fn set_timeout(&self, _: &SandboxId, _: Duration) -> Result<(), SandboxError> {
        Ok(())
    }
    async fn kill(&self, id: &SandboxId) -> Result<(), SandboxError> {
        self.set(id, Scripted::Killed)
    }
    async fn state(&self, id: &SandboxId) -> Result<ProviderState, SandboxError> {
        match self.sandboxes.lock().unwrap().get(id.as_str()) {
            Some((_, Scripted::Paused)) => Ok(ProviderState::Paused),
            Some((_, Scripted::Running)) => Ok(ProviderState::Running),
            _ => Err(SandboxError::NotFound(id.to_string())),
        }
    }
    async fn list(&self) -> Result<Vec<ProviderSandbox>, SandboxError> {
        Ok(Vec::new())
    }
}

/// A preview probe answering with a fixed status.
pub struct FixedProbe(pub u16);

#[async_trait]
impl PreviewProbe for FixedProbe {
    async fn get(&self, url: &str) -> Result<ProbeResponse, ProbeError> {
        Ok(ProbeResponse::from_app(self.0, url))
    }
}

/// Logs go to the test output only when TEST_LOG is set (RUST_LOG filters them).
pub fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        job_worker::init_telemetry(job_worker::config::LogFormat::Pretty);
    }
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A fresh key prefix; its keys are deleted on drop (also when the test panicked).
pub struct TestRedis {
    pub client: Client,
    pub prefix: String,
}

impl TestRedis {
    pub async fn new() -> Self {
        let client = infra_redis::connect(&redis_url())
            .await
            .expect("redis is reachable");
        let prefix = format!("test-worker-{}", uuid::Uuid::new_v4());
        Self { client, prefix }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        // Drop cannot await: a thread with its own runtime cleans up.
        let prefix = self.prefix.clone();
        let cleaned = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let client = infra_redis::connect(&redis_url())
                    .await
                    .expect("redis is reachable");
                let keys: Vec<_> = client
                    .scan_buffered(format!("{prefix}:*"), Some(500), None)
                    .try_collect()
                    .await
                    .expect("scan");
                for key in keys {
                    let _: () = client.del(key).await.expect("del");
                }
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
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Fails the test at once, saying what to install, when `node` is not on the PATH: the local runtime runs
/// the template app with it, and Node.js is a prerequisite of Slipway (README, Quick start).
pub fn require_node() {
    let found = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    assert!(
        found,
        "node is not installed: this test runs a real app; install Node.js 18 or later \
         (`apt-get install nodejs npm`)"
    );
}
