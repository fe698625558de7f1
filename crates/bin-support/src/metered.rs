//! A sandbox runtime decorator that times the provider's lifecycle calls (create, connect/resume, pause,
//! kill) into `slipway_sandbox_op_seconds{op, outcome}`, so pause and resume latency and their outcomes are
//! visible whatever the provider. Everything else passes straight through.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use domain::ports::{
    BackgroundCommand, CommandOutput, CommandSpec, PauseOutcome, ProviderSandbox, ProviderState,
    SandboxError, SandboxRuntime, SandboxSpec,
};
use domain::SandboxId;

const OP_SECONDS: &str = "slipway_sandbox_op_seconds";

/// Declares `slipway_sandbox_op_seconds` and starts each operation's success series at zero, so the
/// histogram is on `/metrics` from start in both binaries.
pub fn register() {
    metrics::describe_histogram!(
        OP_SECONDS,
        metrics::Unit::Seconds,
        "Sandbox provider calls (create, connect/resume, pause, kill), by operation and outcome"
    );
    for (op, outcome) in [
        ("create", "ok"),
        ("connect", "ok"),
        ("pause", "paused"),
        ("kill", "ok"),
    ] {
        let _ = metrics::histogram!(OP_SECONDS, "op" => op, "outcome" => outcome);
    }
}

/// Wraps a runtime; see the module doc.
pub struct MeteredRuntime {
    inner: Arc<dyn SandboxRuntime>,
}

impl MeteredRuntime {
    pub fn new(inner: Arc<dyn SandboxRuntime>) -> Self {
        Self { inner }
    }
}

/// The outcome label of a failed call: the typed error's kind, never its text.
fn error_label(error: &SandboxError) -> &'static str {
    match error {
        SandboxError::NotFound(_) => "not_found",
        SandboxError::Conflict(_) => "conflict",
        SandboxError::Unavailable(_) => "unavailable",
        SandboxError::TimedOut(_) => "timed_out",
        SandboxError::Unauthorized(_) => "unauthorized",
        SandboxError::Invalid(_) => "invalid",
        SandboxError::Provider(_) => "provider",
    }
}

async fn timed<T>(
    op: &'static str,
    call: impl Future<Output = Result<T, SandboxError>>,
    ok_label: impl FnOnce(&T) -> &'static str,
) -> Result<T, SandboxError> {
    let started = Instant::now();
    let result = call.await;
    let outcome = match &result {
        Ok(value) => ok_label(value),
        Err(error) => error_label(error),
    };
    metrics::histogram!(OP_SECONDS, "op" => op, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    result
}

#[async_trait]
impl SandboxRuntime for MeteredRuntime {
    async fn create(&self, spec: &SandboxSpec) -> Result<SandboxId, SandboxError> {
        timed("create", self.inner.create(spec), |_| "ok").await
    }

    async fn connect(&self, id: &SandboxId, timeout: Duration) -> Result<(), SandboxError> {
        timed("connect", self.inner.connect(id, timeout), |()| "ok").await
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

    // Per proxied request and answered from memory: not timed.
    async fn preview_credential(
        &self,
        id: &SandboxId,
    ) -> Result<Option<domain::ports::PreviewCredential>, SandboxError> {
        self.inner.preview_credential(id).await
    }

    async fn pause(&self, id: &SandboxId) -> Result<PauseOutcome, SandboxError> {
        timed("pause", self.inner.pause(id), |outcome| match outcome {
            PauseOutcome::Paused => "paused",
            PauseOutcome::AlreadyPaused => "already_paused",
        })
        .await
    }

    async fn set_timeout(&self, id: &SandboxId, timeout: Duration) -> Result<(), SandboxError> {
        self.inner.set_timeout(id, timeout).await
    }

    async fn kill(&self, id: &SandboxId) -> Result<(), SandboxError> {
        timed("kill", self.inner.kill(id), |()| "ok").await
    }

    async fn state(&self, id: &SandboxId) -> Result<ProviderState, SandboxError> {
        self.inner.state(id).await
    }

    async fn list(&self) -> Result<Vec<ProviderSandbox>, SandboxError> {
        self.inner.list().await
    }
}

#[cfg(test)]
mod tests {
    use domain::ports::sandbox::MockSandboxRuntime;
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;

    /// Runs `calls` on a metered mock under a private recorder and returns the exposition text.
    fn exposition(mock: MockSandboxRuntime, calls: impl AsyncFnOnce(&MeteredRuntime)) -> String {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let metered = MeteredRuntime::new(Arc::new(mock));
        metrics::with_local_recorder(&recorder, || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a runtime")
                .block_on(calls(&metered));
        });
        handle.render()
    }

    #[test]
    fn pauses_are_timed_with_their_outcome() {
        let mut mock = MockSandboxRuntime::new();
        let mut answers = vec![
            Err(SandboxError::NotFound("gone".into())),
            Ok(PauseOutcome::AlreadyPaused),
            Ok(PauseOutcome::Paused),
        ];
        mock.expect_pause()
            .times(3)
            .returning(move |_| answers.pop().expect("three answers"));
        let text = exposition(mock, async |runtime| {
            let id = SandboxId::try_from("sbx1").expect("an id");
            for _ in 0..3 {
                let _ = runtime.pause(&id).await;
            }
        });
        for outcome in ["paused", "already_paused", "not_found"] {
            let line =
                format!(r#"slipway_sandbox_op_seconds_count{{op="pause",outcome="{outcome}"}} 1"#);
            assert!(text.contains(&line), "missing {line} in:\n{text}");
        }
    }

    #[test]
    fn other_calls_pass_through_untimed() {
        let mut mock = MockSandboxRuntime::new();
        mock.expect_workspace_path()
            .return_const("/home/user/app".to_owned());
        let text = exposition(mock, async |runtime| {
            assert_eq!(runtime.workspace_path(), "/home/user/app");
        });
        assert!(!text.contains("slipway_sandbox_op_seconds"), "{text}");
    }
}
