//! [`E2bRuntime`]: the [`SandboxRuntime`] port over E2B's platform API and envd.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use domain::ports::{
    BackgroundCommand, CommandExit, CommandOutput, CommandSpec, ExitReporter, OutputStream,
    PauseOutcome, PreviewCredential, ProviderSandbox, ProviderState, SandboxError, SandboxRuntime,
    SandboxSpec,
};
use domain::usecases::output_tail::{tee, OutputTail};
use domain::{JobId, SandboxId};
use tracing::Instrument;

use crate::access::{AccessCache, SandboxAccess};
use crate::config::{E2bConfig, WORKSPACE_PATH};
use crate::control::{ControlPlane, OnTimeout, PauseAnswer, WireState};
use crate::envd::Envd;
use crate::output::OutputCollector;
use crate::process::{Event, ProcessStream};
use crate::resolve::LocalhostResolver;
use crate::retry::RetryPolicy;

/// How long we wait past a command's own deadline for envd to report it, before giving up ourselves.
const DEADLINE_GRACE: Duration = Duration::from_secs(5);
/// How long a background command may take to report that it started.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The header E2B's proxy reads a private sandbox's traffic access token from.
pub const TRAFFIC_TOKEN_HEADER: &str = "e2b-traffic-access-token";
/// The timeout a connect made only to learn a traffic token asks for (connect never shortens one).
const CREDENTIAL_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long establishing a TCP/TLS connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// E2B sandboxes as a [`SandboxRuntime`].
#[derive(Debug, Clone)]
pub struct E2bRuntime {
    config: E2bConfig,
    control: ControlPlane,
    envd: Envd,
    /// Each sandbox's envd token and domain, learned at create and connect (or fetched when unknown).
    access: AccessCache,
}

impl E2bRuntime {
    /// Builds the client. Fails only when the HTTP client cannot be initialised (TLS setup).
    pub fn new(config: E2bConfig) -> Result<Self, SandboxError> {
        // No client-wide timeout: a background command's stream must be able to stay open indefinitely;
        // every other request sets its own.
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .dns_resolver(Arc::new(LocalhostResolver))
            .build()
            .map_err(|e| SandboxError::Provider(format!("cannot build the http client: {e}")))?;
        let retry = RetryPolicy::CONTROL.with_deadline(config.call_timeout);
        Ok(Self {
            control: ControlPlane::new(client.clone(), config.clone(), retry),
            envd: Envd::new(client, config.clone(), retry),
            config,
            access: AccessCache::default(),
        })
    }

    /// The traffic tokens this runtime learns, for [`crate::HttpPreviewProbe::with_traffic_tokens`].
    pub fn traffic_tokens(&self) -> crate::access::TrafficTokens {
        crate::access::TrafficTokens::new(self.access.clone())
    }

    /// The token and domain of a sandbox; asks the platform when this process has not seen them yet
    /// (a restarted worker, or the api-server resuming a sandbox the worker created).
    async fn access(&self, id: &str) -> Result<SandboxAccess, SandboxError> {
        if let Some(known) = self.access.get(id) {
            return Ok(known);
        }
        let detail = self.control.get(id).await?;
        let access = detail.access();
        self.access.remember(id, access.clone());
        Ok(access)
    }

    async fn open(
        &self,
        id: &SandboxId,
        cmd: &CommandSpec,
        deadline: Option<Duration>,
    ) -> Result<ProcessStream, SandboxError> {
        let access = self.access(id.as_str()).await?;
        self.envd.start(id.as_str(), &access, cmd, deadline).await
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
            Event::Ended {
                exit_code: code, ..
            } => exit_code = Some(code),
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
            Some(Event::Ended { exit_code, .. }) => {
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

/// Keeps reading a background command's stream so its output reaches the sink; no deadline. Its end
/// event is reported with the last lines it printed; a stream lost before it reports nothing.
async fn drain(
    mut stream: ProcessStream,
    mut output: OutputCollector,
    tail: OutputTail,
    reporter: ExitReporter,
) {
    let mut reporter = Some(reporter);
    loop {
        match stream.next_event().await {
            Ok(Some(Event::Stdout(bytes))) => output.push(OutputStream::Stdout, &bytes),
            Ok(Some(Event::Stderr(bytes))) => output.push(OutputStream::Stderr, &bytes),
            Ok(Some(Event::Ended { exit_code, error })) => {
                output.finish();
                tracing::info!(
                    exit_code,
                    error = error.as_deref(),
                    "background command ended"
                );
                if let Some(reporter) = reporter.take() {
                    reporter.exited(CommandExit {
                        exit_code,
                        output_tail: tail.lines(),
                    });
                }
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
        if info.envd_access_token.is_none() {
            // Asked for a secure sandbox and got none: its envd would take anyone's commands.
            tracing::warn!("the provider created the sandbox without an envd access token");
        }
        self.access.remember(&info.sandbox_id, info.access());
        Ok(id)
    }

    #[tracing::instrument(skip_all, fields(sandbox_id = %id), err)]
    async fn connect(&self, id: &SandboxId, timeout: Duration) -> Result<(), SandboxError> {
        let info = self.control.connect(id.as_str(), timeout).await?;
        self.access.remember(id.as_str(), info.access());
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
            let access = self.access(id.as_str()).await.unwrap_or_default();
            if let Err(error) = self.envd.kill_process(id.as_str(), &access, pid).await {
                tracing::warn!(pid, %error, "could not stop a command past its deadline");
            }
        }
        result
    }

    #[tracing::instrument(skip_all, fields(sandbox_id = %id, pid = tracing::field::Empty), err)]
    async fn run_background(
        &self,
        id: &SandboxId,
        cmd: CommandSpec,
    ) -> Result<BackgroundCommand, SandboxError> {
        // The last lines are kept for the exit report, whatever the command's own sink does.
        let tail = OutputTail::new();
        let sink = match cmd.output.clone() {
            Some(sink) => tee(sink, tail.sink()),
            None => tail.sink(),
        };
        let mut output = OutputCollector::new(Some(sink), false);
        let started = async {
            let mut stream = self.open(id, &cmd, None).await?;
            let pid = wait_for_pid(&mut stream, &mut output).await?;
            Ok::<_, SandboxError>((stream, pid))
        };
        let (stream, pid) = tokio::time::timeout(START_TIMEOUT, started)
            .await
            .map_err(|_| SandboxError::TimedOut("background command did not start".into()))??;
        tracing::Span::current().record("pid", pid);
        let (command, reporter) = BackgroundCommand::watched(pid);
        tokio::spawn(
            drain(stream, output, tail, reporter).instrument(tracing::info_span!(
                "background_command",
                sandbox_id = %id,
                pid
            )),
        );
        Ok(command)
    }

    #[tracing::instrument(skip_all, fields(sandbox_id = %id, files = files.len()), err)]
    async fn write_files(
        &self,
        id: &SandboxId,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<(), SandboxError> {
        let access = self.access(id.as_str()).await?;
        self.envd.write_files(id.as_str(), &access, &files).await
    }

    #[tracing::instrument(skip_all, fields(sandbox_id = %id, path = %path), err)]
    async fn read_file(&self, id: &SandboxId, path: &str) -> Result<Vec<u8>, SandboxError> {
        let access = self.access(id.as_str()).await?;
        self.envd.read_file(id.as_str(), &access, path).await
    }

    fn workspace_path(&self) -> String {
        WORKSPACE_PATH.to_owned()
    }

    async fn preview_url(&self, id: &SandboxId, port: u16) -> Result<String, SandboxError> {
        let access = self.access(id.as_str()).await?;
        let domain = self.config.domain_of(access.domain.as_deref());
        Ok(self.config.preview_url(id.as_str(), domain, port))
    }

    #[tracing::instrument(skip_all, fields(sandbox_id = %id), err)]
    async fn preview_credential(
        &self,
        id: &SandboxId,
    ) -> Result<Option<PreviewCredential>, SandboxError> {
        if !self.config.private_previews {
            return Ok(None);
        }
        let mut access = self.access(id.as_str()).await?;
        if access.traffic.is_none() {
            // Only create and connect answers carry the token. Connect never shortens the timeout, and
            // the gateway asks only for a sandbox its record says is running.
            let info = self
                .control
                .connect(id.as_str(), CREDENTIAL_CONNECT_TIMEOUT)
                .await?;
            access = info.access();
            self.access.remember(id.as_str(), access.clone());
        }
        Ok(access.traffic.map(|token| PreviewCredential {
            header: TRAFFIC_TOKEN_HEADER,
            value: token.expose().to_owned(),
        }))
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
            self.access.forget(id.as_str());
        }
        result
    }

    #[tracing::instrument(skip_all, fields(sandbox_id = %id), err)]
    async fn state(&self, id: &SandboxId) -> Result<ProviderState, SandboxError> {
        let detail = self.control.get(id.as_str()).await?;
        self.access.remember(id.as_str(), detail.access());
        if detail.lifecycle.map(|l| l.on_timeout) == Some(OnTimeout::Kill) {
            // Created with autoPause: the provider should pause it at its timeout, not kill it.
            tracing::warn!(
                "the provider will kill this sandbox at its timeout instead of pausing it"
            );
        }
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
