//! The sandbox runtime: E2B microVMs in production, local process sandboxes by default.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::{JobId, ProjectId, SandboxId, UserId};

/// Every way a sandbox operation fails. Callers match on the variant, never on the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxError {
    /// The provider does not have this sandbox (never had it, expired, or killed).
    #[error("sandbox not found: {0}")]
    NotFound(String),
    /// The operation conflicts with the sandbox's state (e.g. already paused, already running).
    #[error("sandbox conflict: {0}")]
    Conflict(String),
    /// The provider could not be reached or is overloaded; worth retrying later.
    #[error("sandbox provider unavailable: {0}")]
    Unavailable(String),
    /// The operation (or the command) ran past its deadline.
    #[error("sandbox operation timed out: {0}")]
    TimedOut(String),
    /// Our credentials were refused.
    #[error("sandbox provider refused our credentials: {0}")]
    Unauthorized(String),
    /// We asked for something the provider cannot do (bad path, bad request).
    #[error("invalid sandbox request: {0}")]
    Invalid(String),
    /// Anything else the provider reported.
    #[error("sandbox provider error: {0}")]
    Provider(String),
}

impl SandboxError {
    /// Worth retrying: the provider may answer differently next time.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SandboxError::Unavailable(_) | SandboxError::TimedOut(_)
        )
    }
}

/// What a new sandbox is created with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSpec {
    pub job_id: JobId,
    pub user_id: UserId,
    pub project_id: ProjectId,
    /// The provider kills (or, with `auto_pause`, pauses) the sandbox when this runs out.
    pub timeout: Duration,
    pub auto_pause: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// Receives a command's output as it arrives.
#[derive(Clone)]
pub struct OutputSink(pub Arc<OutputFn>);

/// The callback behind an [`OutputSink`].
pub type OutputFn = dyn Fn(OutputStream, &str) + Send + Sync;

impl fmt::Debug for OutputSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OutputSink")
    }
}

/// A command to run in the sandbox through a shell (`/bin/bash -lc <cmd>` or the platform's equivalent).
#[derive(Debug, Clone)]
pub struct CommandSpec {
    pub cmd: String,
    /// Working directory inside the sandbox; the workspace when `None`.
    pub cwd: Option<String>,
    pub envs: BTreeMap<String, String>,
    /// For a foreground command, the deadline of the whole command. Ignored for background commands.
    pub timeout: Duration,
    pub output: Option<OutputSink>,
}

impl CommandSpec {
    pub fn new(cmd: impl Into<String>, timeout: Duration) -> Self {
        Self {
            cmd: cmd.into(),
            cwd: None,
            envs: BTreeMap::new(),
            timeout,
            output: None,
        }
    }

    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.envs.insert(k.into(), v.into());
        self
    }

    pub fn cwd(mut self, cwd: impl Into<String>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }
}

/// A finished foreground command. A non-zero exit is a result, not an error.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandOutput {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }
}

/// How a background command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandExit {
    /// The exit code; a command killed by a signal has none of its own and reports -1 (or 128 + the
    /// signal, as a shell would, where the runtime sees it that way).
    pub exit_code: i32,
    /// The last lines of its output (stdout and stderr as they came), where it says what went wrong.
    pub output_tail: String,
}

/// A command started in the background: its pid, and its end once the runtime sees it.
///
/// Runtimes that follow the command hand out [`BackgroundCommand::watched`] and report through the
/// [`ExitReporter`]; [`BackgroundCommand::unwatched`] never reports (a runtime that cannot tell, or a test
/// that does not care).
#[derive(Debug)]
pub struct BackgroundCommand {
    pub pid: u32,
    exit: Option<tokio::sync::watch::Receiver<Option<CommandExit>>>,
    catch_up: Option<OutputCatchUp>,
}

/// Asks a runtime that relays a command's output after the fact (from a file it follows) to hand its sink
/// everything written so far; the answer comes once it has. Runtimes that stream output as it is made
/// have nothing to catch up.
pub type OutputCatchUp = tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<()>>;

/// The runtime's side of a [`BackgroundCommand`]: reports its end. Dropping it unused means "cannot tell"
/// (the stream that carried the command was lost), never "exited".
#[derive(Debug)]
pub struct ExitReporter(tokio::sync::watch::Sender<Option<CommandExit>>);

impl ExitReporter {
    pub fn exited(self, exit: CommandExit) {
        self.0.send_replace(Some(exit));
    }
}

impl BackgroundCommand {
    /// A command whose end the runtime reports through the returned reporter.
    pub fn watched(pid: u32) -> (Self, ExitReporter) {
        let (tx, rx) = tokio::sync::watch::channel(None);
        (
            Self {
                pid,
                exit: Some(rx),
                catch_up: None,
            },
            ExitReporter(tx),
        )
    }

    /// A command whose end is never reported.
    pub fn unwatched(pid: u32) -> Self {
        Self {
            pid,
            exit: None,
            catch_up: None,
        }
    }

    /// The same command, its output relayed late through `catch_up` (see [`OutputCatchUp`]).
    pub fn with_output_catch_up(self, catch_up: OutputCatchUp) -> Self {
        Self {
            catch_up: Some(catch_up),
            ..self
        }
    }

    /// Waits, at most `bound`, until the sink has been handed all the output the command wrote so far:
    /// what it printed before the moment that matters (its server answering) is then in the build's log.
    pub async fn output_caught_up(&self, bound: std::time::Duration) {
        let Some(catch_up) = &self.catch_up else {
            return;
        };
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let asked = async {
            if catch_up.send(done_tx).await.is_ok() {
                // An error only says the relay has ended, having handed over everything it read.
                let _ = done_rx.await;
            }
        };
        let _ = tokio::time::timeout(bound, asked).await;
    }

    /// Resolves once the command has exited; stays pending while it runs and forever when its end cannot
    /// be known. Can be awaited again (it answers the same exit).
    pub async fn exited(&mut self) -> CommandExit {
        if let Some(rx) = self.exit.as_mut() {
            if let Ok(exit) = rx.wait_for(Option::is_some).await {
                if let Some(exit) = exit.clone() {
                    return exit;
                }
            }
            // The reporter is gone without a word: the end will never be known.
            self.exit = None;
        }
        std::future::pending().await
    }
}

/// What `pause` found: either way the sandbox is now paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseOutcome {
    Paused,
    AlreadyPaused,
}

/// A header every request to a sandbox's preview must carry, when the provider keeps previews private
/// (E2B's `allowPublicTraffic: false`): only the holder (the preview gateway) reaches the app. Its `Debug`
/// never prints the value.
#[derive(Clone, PartialEq, Eq)]
pub struct PreviewCredential {
    pub header: &'static str,
    pub value: String,
}

impl std::fmt::Debug for PreviewCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PreviewCredential({}: <redacted>)", self.header)
    }
}

/// The provider's own view of a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderState {
    Running,
    Paused,
}

/// One of our sandboxes as the provider lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderSandbox {
    pub sandbox_id: SandboxId,
    pub state: ProviderState,
    /// From the metadata we created it with; `None` when the metadata is missing or not a job id.
    pub job_id: Option<JobId>,
}

/// A place to run a build. All methods take the sandbox id, so one runtime serves every job.
///
/// Errors: [`SandboxError::NotFound`] whenever the provider does not have the sandbox; the other variants
/// as documented on [`SandboxError`].
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait SandboxRuntime: Send + Sync {
    /// Creates and starts a sandbox, returning its id as soon as the provider assigned one.
    async fn create(&self, spec: &SandboxSpec) -> Result<SandboxId, SandboxError>;

    /// Connects to a sandbox, resuming it when paused, and makes sure it runs for at least `timeout` from
    /// now. E2B keeps a longer timeout the sandbox already has (connect only ever extends): callers never
    /// rely on connect to shorten one, `set_timeout` does that. Its processes keep running.
    async fn connect(&self, id: &SandboxId, timeout: Duration) -> Result<(), SandboxError>;

    /// Runs a command to completion (or `TimedOut` at its deadline), streaming output to its sink.
    async fn run(&self, id: &SandboxId, cmd: CommandSpec) -> Result<CommandOutput, SandboxError>;

    /// Starts a command that outlives this call (a dev server); its output goes to the command's sink, and
    /// its end is reported on the returned handle when the runtime can see it.
    async fn run_background(
        &self,
        id: &SandboxId,
        cmd: CommandSpec,
    ) -> Result<BackgroundCommand, SandboxError>;

    /// Writes files (paths relative to the workspace), creating directories as needed.
    async fn write_files(
        &self,
        id: &SandboxId,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<(), SandboxError>;

    /// Reads one file (path relative to the workspace). A missing file is `NotFound`.
    async fn read_file(&self, id: &SandboxId, path: &str) -> Result<Vec<u8>, SandboxError>;

    /// The absolute workspace directory inside the sandbox (e.g. `/home/user/project`).
    fn workspace_path(&self) -> String;

    /// The URL a browser opens to reach `port` inside the sandbox.
    async fn preview_url(&self, id: &SandboxId, port: u16) -> Result<String, SandboxError>;

    /// What a request to the running sandbox's preview must carry; `None` when its previews are public.
    async fn preview_credential(
        &self,
        _id: &SandboxId,
    ) -> Result<Option<PreviewCredential>, SandboxError> {
        Ok(None)
    }

    /// Pauses the sandbox, keeping memory and files. Only `Ok` means the provider confirmed it.
    async fn pause(&self, id: &SandboxId) -> Result<PauseOutcome, SandboxError>;

    /// Sets how long from now until the provider stops the sandbox.
    async fn set_timeout(&self, id: &SandboxId, timeout: Duration) -> Result<(), SandboxError>;

    /// Kills the sandbox. Killing one that is already gone is `NotFound`.
    async fn kill(&self, id: &SandboxId) -> Result<(), SandboxError>;

    /// The provider's view of one sandbox.
    async fn state(&self, id: &SandboxId) -> Result<ProviderState, SandboxError>;

    /// Every sandbox of ours the provider has (created by Slipway, matched by metadata).
    async fn list(&self) -> Result<Vec<ProviderSandbox>, SandboxError>;
}
