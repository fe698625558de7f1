//! The benchmark's sandbox: every operation answers at once, so the job figures measure Slipway's own
//! bookkeeping rather than a sandbox provider. It lives in xtask on purpose: no configuration of the real
//! binaries can select it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use domain::ports::{
    BackgroundCommand, CodeGenerator, CommandOutput, CommandSpec, GeneratedFile, GeneratedFiles,
    GeneratorError, PauseOutcome, PreviewProbe, ProbeError, ProbeResponse, ProviderSandbox,
    ProviderState, SandboxError, SandboxRuntime, SandboxSpec,
};
use domain::{JobGoal, SandboxId};

/// The preview URL every instant sandbox hands out (never fetched: [`InstantProbe`] answers for it).
pub const PREVIEW_URL: &str = "http://127.0.0.1:9/instant-preview";

/// A [`SandboxRuntime`] whose operations all succeed immediately. It counts pauses and the time spent in
/// them, so the pause-bookkeeping figure can subtract the runtime's own share.
#[derive(Debug, Default)]
pub struct InstantRuntime {
    pauses: AtomicU64,
    pause_nanos: AtomicU64,
}

impl InstantRuntime {
    /// How many pauses were asked for, and their mean duration inside this runtime.
    pub fn pause_stats(&self) -> (u64, Duration) {
        let count = self.pauses.load(Ordering::Relaxed);
        let nanos = self.pause_nanos.load(Ordering::Relaxed);
        let mean = nanos.checked_div(count).unwrap_or(0);
        (count, Duration::from_nanos(mean))
    }
}

/// `instant-<uuid>`: letters, digits and a dash, which every sandbox id accepts.
fn fresh_id() -> Result<SandboxId, SandboxError> {
    SandboxId::try_from(format!("instant-{}", uuid::Uuid::new_v4().simple()))
        .map_err(|e| SandboxError::Invalid(e.to_string()))
}

#[async_trait]
impl SandboxRuntime for InstantRuntime {
    async fn create(&self, _spec: &SandboxSpec) -> Result<SandboxId, SandboxError> {
        fresh_id()
    }

    async fn connect(&self, _id: &SandboxId, _timeout: Duration) -> Result<(), SandboxError> {
        Ok(())
    }

    async fn run(&self, _id: &SandboxId, _cmd: CommandSpec) -> Result<CommandOutput, SandboxError> {
        Ok(CommandOutput::default())
    }

    async fn run_background(
        &self,
        _id: &SandboxId,
        _cmd: CommandSpec,
    ) -> Result<BackgroundCommand, SandboxError> {
        Ok(BackgroundCommand::unwatched(1))
    }

    async fn write_files(
        &self,
        _id: &SandboxId,
        _files: Vec<(String, Vec<u8>)>,
    ) -> Result<(), SandboxError> {
        Ok(())
    }

    async fn read_file(&self, _id: &SandboxId, path: &str) -> Result<Vec<u8>, SandboxError> {
        Err(SandboxError::NotFound(path.to_owned()))
    }

    fn workspace_path(&self) -> String {
        "/home/user/project".to_owned()
    }

    async fn preview_url(&self, _id: &SandboxId, _port: u16) -> Result<String, SandboxError> {
        Ok(PREVIEW_URL.to_owned())
    }

    async fn pause(&self, _id: &SandboxId) -> Result<PauseOutcome, SandboxError> {
        // Timed like a real provider call would be, so the report subtracts what the runtime took.
        let started = Instant::now();
        self.pauses.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.pause_nanos.fetch_add(nanos, Ordering::Relaxed);
        Ok(PauseOutcome::Paused)
    }

    async fn set_timeout(&self, _id: &SandboxId, _timeout: Duration) -> Result<(), SandboxError> {
        Ok(())
    }

    async fn kill(&self, _id: &SandboxId) -> Result<(), SandboxError> {
        Ok(())
    }

    async fn state(&self, _id: &SandboxId) -> Result<ProviderState, SandboxError> {
        Ok(ProviderState::Paused)
    }

    async fn list(&self) -> Result<Vec<ProviderSandbox>, SandboxError> {
        Ok(Vec::new())
    }
}

/// A [`PreviewProbe`] for which every preview answers 200 at once.
#[derive(Debug, Default)]
pub struct InstantProbe;

#[async_trait]
impl PreviewProbe for InstantProbe {
    async fn get(&self, url: &str) -> Result<ProbeResponse, ProbeError> {
        Ok(ProbeResponse::from_app(200, url))
    }
}

/// A generator that hands back a fixed two-file Node app at once.
#[derive(Debug, Default)]
pub struct InstantGenerator;

const PACKAGE_JSON: &str = r#"{"name":"bench-app","private":true,"scripts":{"dev":"node server.js","start":"node server.js"}}"#;
const SERVER_JS: &str =
    "require('http').createServer((q, s) => s.end('ok')).listen(process.env.PORT || 3000);\n";

#[async_trait]
impl CodeGenerator for InstantGenerator {
    async fn generate(&self, _goal: &JobGoal) -> Result<GeneratedFiles, GeneratorError> {
        Ok(GeneratedFiles(vec![
            GeneratedFile {
                path: "package.json".to_owned(),
                content: PACKAGE_JSON.to_owned(),
            },
            GeneratedFile {
                path: "server.js".to_owned(),
                content: SERVER_JS.to_owned(),
            },
        ]))
    }
}
