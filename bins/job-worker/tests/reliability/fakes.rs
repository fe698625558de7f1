//! Test doubles that wrap or replace one port: a runtime that counts resumes, generators that hang.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use domain::ports::{
    BackgroundCommand, CodeGenerator, CommandOutput, CommandSpec, GeneratedFiles, GeneratorError,
    PauseOutcome, ProviderSandbox, ProviderState, SandboxError, SandboxRuntime, SandboxSpec,
};
use domain::{JobGoal, SandboxId};
use infra_local::TemplateGenerator;

/// A runtime that counts `connect` calls (resumes) and delegates everything to the real one.
pub struct CountingRuntime {
    inner: Arc<dyn SandboxRuntime>,
    pub connects: AtomicU32,
}

impl CountingRuntime {
    pub fn new(inner: Arc<dyn SandboxRuntime>) -> Self {
        Self {
            inner,
            connects: AtomicU32::new(0),
        }
    }
}

#[async_trait]
impl SandboxRuntime for CountingRuntime {
    async fn create(&self, spec: &SandboxSpec) -> Result<SandboxId, SandboxError> {
        self.inner.create(spec).await
    }
    async fn connect(&self, id: &SandboxId, timeout: Duration) -> Result<(), SandboxError> {
        self.connects.fetch_add(1, Ordering::SeqCst);
        self.inner.connect(id, timeout).await
    }
    async fn run(&self, id: &SandboxId, cmd: CommandSpec) -> Result<CommandOutput, SandboxError> {
        self.inner.run(id, cmd).await
    }
    async fn run_background(
        &self,
        id: &SandboxId,
        cmd: CommandSpec,
    ) -> Result<BackgroundCommand, SandboxError> {
        self.inner.run_background(id, cmd).await
    }
    async fn write_files(
        &self,
        id: &SandboxId,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<(), SandboxError> {
        self.inner.write_files(id, files).await
    }
    async fn read_file(&self, id: &SandboxId, path: &str) -> Result<Vec<u8>, SandboxError> {
        self.inner.read_file(id, path).await
    }
    fn workspace_path(&self) -> String {
        self.inner.workspace_path()
    }
    async fn preview_url(&self, id: &SandboxId, port: u16) -> Result<String, SandboxError> {
        self.inner.preview_url(id, port).await
    }
    async fn pause(&self, id: &SandboxId) -> Result<PauseOutcome, SandboxError> {
        self.inner.pause(id).await
    }
    async fn set_timeout(&self, id: &SandboxId, timeout: Duration) -> Result<(), SandboxError> {
        self.inner.set_timeout(id, timeout).await
    }
    async fn kill(&self, id: &SandboxId) -> Result<(), SandboxError> {
        self.inner.kill(id).await
    }
    async fn state(&self, id: &SandboxId) -> Result<ProviderState, SandboxError> {
        self.inner.state(id).await
    }
    async fn list(&self) -> Result<Vec<ProviderSandbox>, SandboxError> {
        self.inner.list().await
    }
}

/// A generator that signals it was called, then never answers: a build stuck in `code`.
#[derive(Default)]
pub struct BlockingGenerator {
    pub calls: AtomicU32,
}

#[async_trait]
impl CodeGenerator for BlockingGenerator {
    async fn generate(&self, _: &JobGoal) -> Result<GeneratedFiles, GeneratorError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }
}

/// A generator that holds every call until the gate opens, then writes the template app.
pub struct GatedGenerator {
    gate: tokio::sync::watch::Sender<bool>,
    pub calls: AtomicU32,
}

impl GatedGenerator {
    pub fn closed() -> Self {
        Self {
            gate: tokio::sync::watch::channel(false).0,
            calls: AtomicU32::new(0),
        }
    }

    pub fn open(&self) {
        self.gate.send_replace(true);
    }
}

#[async_trait]
impl CodeGenerator for GatedGenerator {
    async fn generate(&self, goal: &JobGoal) -> Result<GeneratedFiles, GeneratorError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut gate = self.gate.subscribe();
        gate.wait_for(|open| *open)
            .await
            .map_err(|e| GeneratorError::Failed(e.to_string()))?;
        TemplateGenerator.generate(goal).await
    }
}
