//! [`E2bRuntime`]: the [`SandboxRuntime`] port over E2B's platform API and envd.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use domain::ports::{
    CommandOutput, CommandSpec, OutputStream, PauseOutcome, ProviderSandbox, ProviderState,
    SandboxError, SandboxRuntime, SandboxSpec,
};
use domain::{JobId, SandboxId};
use tracing::Instrument;

use crate::config::{E2bConfig, WORKSPACE_PATH};
use crate::control::{ControlPlane, PauseAnswer, WireState};
use crate::envd::Envd;
use crate::output::OutputCollector;
use crate::process::{Event, ProcessStream};
use crate::retry::RetryPolicy;

/// How long we wait past a command's own deadline for envd to report it, before giving up ourselves.
const DEADLINE_GRACE: Duration = Duration::from_secs(5);
/// How long a background command may take to report that it started.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long establishing a TCP/TLS connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// E2B sandboxes as a [`SandboxRuntime`].
#[derive(Debug, Clone)]
pub struct E2bRuntime {
    config: E2bConfig,
    control: ControlPlane,
    envd: Envd,
    /// envd access tokens by sandbox id, learned at create and connect (or fetched when unknown).
    tokens: Arc<RwLock<HashMap<String, Option<String>>>>,
}

impl E2bRuntime {
    /// Builds the client. Fails only when the HTTP client cannot be initialised (TLS setup).
    pub fn new(config: E2bConfig) -> Result<Self, SandboxError> {
        // No client-wide timeout: a background command's stream must be able to stay open indefinitely;
        // every other request sets its own.
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| SandboxError::Provider(format!("cannot build the http client: {e}")))?;
        let retry = RetryPolicy::default();
        Ok(Self {
            control: ControlPlane::new(client.clone(), config.clone(), retry),
            envd: Envd::new(client, config.clone(), retry),
            config,
            tokens: Arc::default(),
        })
    }

    fn remember_token(&self, id: &str, token: Option<String>) {
        if let Ok(mut tokens) = self.tokens.write() {
            tokens.insert(id.to_owned(), token);
        }
    }

    fn forget_token(&self, id: &str) {
        if let Ok(mut tokens) = self.tokens.write() {
            tokens.remove(id);
        }
    }

    /// The envd access token of a sandbox; asks the platform when this process has not seen it yet.
    async fn token(&self, id: &str) -> Result<Option<String>, SandboxError> {
        let known = self
            .tokens
            .read()
            .ok()
            .and_then(|tokens| tokens.get(id).cloned());
        if let Some(token) = known {
            return Ok(token);
        }
        let detail = self.control.get(id).await?;
        self.remember_token(id, detail.envd_access_token.clone());
        Ok(detail.envd_access_token)
    }

    async fn open(
        &self,
        id: &SandboxId,
        cmd: &CommandSpec,
        deadline: Option<Duration>,
    ) -> Result<ProcessStream, SandboxError> {
        let token = self.token(id.as_str()).await?;
        self.envd
            .start(id.as_str(), token.as_deref(), cmd, deadline)
            .await
    }
}

/// Reads a foreground command's stream to its end, noting its pid in `pid` as soon as envd reports it.
async fn collect(
    mut stream: ProcessStream,
    mut output: OutputCollector,
    pid: &AtomicU32,
) -> Result<CommandOutput, SandboxError> {
    let mut exit_code = None;
    while let Some(event) = stream.next_event().await? {
        match event {
            Event::Stdout(bytes) => output.push(OutputStream::Stdout, &bytes),
            Event::Stderr(bytes) => output.push(OutputStream::Stderr, &bytes),
            Event::Ended { exit_code: code } => exit_code = Some(code),
            Event::Started { pid: started } => pid.store(started, Ordering::Relaxed),
            Event::KeepAlive => {}
        }
    }
    output.finish();
    let exit_code = exit_code.ok_or_else(|| {
        SandboxError::Unavailable("process stream ended before the process did".into())
    })?;
    Ok(CommandOutput {
        exit_code,
        stdout: output.out,
        stderr: output.err,
    })
}

/// Reads a background command's stream until envd reports its pid.
async fn wait_for_pid(
    stream: &mut ProcessStream,
    output: &mut OutputCollector,
) -> Result<u32, SandboxError> {
    loop {
        match stream.next_event().await? {
            Some(Event::Started { pid }) => return Ok(pid),
            Some(Event::Stdout(bytes)) => output.push(OutputStream::Stdout, &bytes),
            Some(Event::Stderr(bytes)) => output.push(OutputStream::Stderr, &bytes),
            Some(Event::Ended { exit_code }) => {
                return Err(SandboxError::Provider(format!(
                    "background command ended before it started (exit code {exit_code})"
                )))
            }
            Some(Event::KeepAlive) => {}
            None => {
                return Err(SandboxError::Provider(
                    "process stream ended without a start event".into(),
                ))
            }
        }
    }
}

/// Keeps reading a background command's stream so its output reaches the sink; no deadline.
async fn drain(mut stream: ProcessStream, mut output: OutputCollector) {
    loop {
        match stream.next_event().await {
            Ok(Some(Event::Stdout(bytes))) => output.push(OutputStream::Stdout, &bytes),
            Ok(Some(Event::Stderr(bytes))) => output.push(OutputStream::Stderr, &bytes),
            Ok(Some(Event::Ended { exit_code })) => {
                tracing::info!(exit_code, "background command ended");
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(error) => {
                // The stream is only an observer: the process keeps running in the sandbox.
                tracing::debug!(%error, "background command stream closed");
                break;
            }
        }
    }
    output.finish();
}

fn provider_state(state: WireState) -> ProviderState {
    match state {
        WireState::Running => ProviderState::Running,
        WireState::Paused => ProviderState::Paused,
    }
}

#[async_trait]
impl SandboxRuntime for E2bRuntime {
    #[tracing::instrument(skip_all, fields(job_id = %spec.job_id, sandbox_id = tracing::field::Empty), err)]
    async fn create(&self, spec: &SandboxSpec) -> Result<SandboxId, SandboxError> {
        let info = self.control.create(spec).await?;
        tracing::Span::current().record("sandbox_id", info.sandbox_id.as_str());
        let id = SandboxId::try_from(info.sandbox_id.clone()).map_err(|e| {
            SandboxError::Provider(format!("provider returned a bad sandbox id: {e}"))
        })?;
        self.remember_token(&info.sandbox_id, info.envd_access_token);
        Ok(id)
    }

    #[tracing::instrument(skip_all, fields(sandbox_id = %id), err)]
    async fn connect(&self, id: &SandboxId, timeout: Duration) -> Result<(), SandboxError> {
        let info = self.control.connect(id.as_str(), timeout).await?;
        self.remember_token(id.as_str(), info.envd_access_token);
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(sandbox_id = %id), err)]
    async fn run(&self, id: &SandboxId, cmd: CommandSpec) -> Result<CommandOutput, SandboxError> {
        let deadline = cmd.timeout;
        let output = OutputCollector::new(cmd.output.clone(), true);
        let pid = AtomicU32::new(0);
        let work = async {
            let stream = self.open(id, &cmd, Some(deadline)).await?;
            collect(stream, output, &pid).await
        };
        // envd ends the stream at the deadline we sent; this is the backstop if it does not.
        let result = tokio::time::timeout(deadline + DEADLINE_GRACE, work)
            .await
            .unwrap_or_else(|_| {
                Err(SandboxError::TimedOut(format!(
                    "command ran past its {}s deadline",
                    deadline.as_secs()
                )))
            });
        let pid = pid.load(Ordering::Relaxed);
        if matches!(result, Err(SandboxError::TimedOut(_))) && pid != 0 {
            // The stream ending does not end the process: stop it so it cannot outlive its deadline.
            let token = self.token(id.as_str()).await.ok().flatten();
            if let Err(error) = self
                .envd
                .kill_process(id.as_str(), token.as_deref(), pid)
                .await
            {
                tracing::warn!(pid, %error, "could not stop a command past its deadline");
            }
        }
        result
    }

    #[tracing::instrument(skip_all, fields(sandbox_id = %id, pid = tracing::field::Empty), err)]
    async fn run_background(&self, id: &SandboxId, cmd: CommandSpec) -> Result<u32, SandboxError> {
        let mut output = OutputCollector::new(cmd.output.clone(), false);
        let started = async {
            let mut stream = self.open(id, &cmd, None).await?;
            let pid = wait_for_pid(&mut stream, &mut output).await?;
            Ok::<_, SandboxError>((stream, pid))
        };
        let (stream, pid) = tokio::time::timeout(START_TIMEOUT, started)
            .await
            .map_err(|_| SandboxError::TimedOut("background command did not start".into()))??;
        tracing::Span::current().record("pid", pid);
        tokio::spawn(drain(stream, output).instrument(tracing::info_span!(
            "background_command",
            sandbox_id = %id,
            pid
        )));
        Ok(pid)
    }

    #[tracing::instrument(skip_all, fields(sandbox_id = %id, files = files.len()), err)]
    async fn write_files(
        &self,
        id: &SandboxId,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<(), SandboxError> {
        let token = self.token(id.as_str()).await?;
        self.envd
            .write_files(id.as_str(), token.as_deref(), &files)
            .await
    }

    #[tracing::instrument(skip_all, fields(sandbox_id = %id, path = %path), err)]
    async fn read_file(&self, id: &SandboxId, path: &str) -> Result<Vec<u8>, SandboxError> {
        let token = self.token(id.as_str()).await?;
        self.envd
            .read_file(id.as_str(), token.as_deref(), path)
            .await
    }

    fn workspace_path(&self) -> String {
        WORKSPACE_PATH.to_owned()
    }

    async fn preview_url(&self, id: &SandboxId, port: u16) -> Result<String, SandboxError> {
        Ok(self.config.preview_url(id.as_str(), port))
    }

    #[tracing::instrument(skip_all, fields(sandbox_id = %id), err)]
    async fn pause(&self, id: &SandboxId) -> Result<PauseOutcome, SandboxError> {
        match self.control.pause(id.as_str()).await? {
            PauseAnswer::Paused => Ok(PauseOutcome::Paused),
            PauseAnswer::AlreadyPaused => Ok(PauseOutcome::AlreadyPaused),
        }
    }

    #[tracing::instrument(skip_all, fields(sandbox_id = %id), err)]
    async fn set_timeout(&self, id: &SandboxId, timeout: Duration) -> Result<(), SandboxError> {
        self.control.set_timeout(id.as_str(), timeout).await
    }

    // A sandbox already gone (NotFound) is an expected answer, and every caller logs the errors it does
    // not expect, so the span records errors at debug only.
    #[tracing::instrument(skip_all, fields(sandbox_id = %id), err(level = "debug"))]
    async fn kill(&self, id: &SandboxId) -> Result<(), SandboxError> {
        let result = self.control.kill(id.as_str()).await;
        if matches!(result, Ok(()) | Err(SandboxError::NotFound(_))) {
            self.forget_token(id.as_str());
        }
        result
    }

    #[tracing::instrument(skip_all, fields(sandbox_id = %id), err)]
    async fn state(&self, id: &SandboxId) -> Result<ProviderState, SandboxError> {
        let detail = self.control.get(id.as_str()).await?;
        self.remember_token(id.as_str(), detail.envd_access_token);
        Ok(provider_state(detail.state))
    }

    #[tracing::instrument(skip_all, err)]
    async fn list(&self) -> Result<Vec<ProviderSandbox>, SandboxError> {
        let listed = self.control.list_ours().await?;
        let mut out = Vec::with_capacity(listed.len());
        for sandbox in listed {
            let Ok(sandbox_id) = SandboxId::try_from(sandbox.sandbox_id.clone()) else {
                tracing::warn!(sandbox_id = %sandbox.sandbox_id, "skipping a listed sandbox with a bad id");
                continue;
            };
            let job_id = sandbox
                .metadata
                .get("job_id")
                .and_then(|v| JobId::parse(v).ok());
            out.push(ProviderSandbox {
                sandbox_id,
                state: provider_state(sandbox.state),
                job_id,
            });
        }
        Ok(out)
    }
}
