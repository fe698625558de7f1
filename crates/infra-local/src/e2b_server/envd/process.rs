//! `process.Process` over the local runtime: `Start` streams a command's start event, its output and its
//! end event (exit code, and `error` when it did not end well) for as long as it runs, whether the client
//! waits for it (a foreground command) or keeps it in the background; `SendSignal` stops one; `List`
//! names them. As in envd, a `Connect-Timeout-Ms` deadline ends the command and the stream with
//! `deadline_exceeded`, and a client that goes away leaves the command running.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use domain::ports::{CommandSpec, OutputSink, OutputStream, SandboxError, SandboxRuntime};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio_util::sync::CancellationToken;

use super::super::{EnvdTarget, ServerState};
use super::connect::{self, Code, ConnectError};
use super::paths::SandboxFs;

/// A command without a deadline runs until it ends (or is stopped): a year stands for "no deadline".
const NO_DEADLINE: Duration = Duration::from_secs(365 * 24 * 3600);
/// The first pid handed out (as a process table would, well above the init processes).
const FIRST_PID: u32 = 1000;

/// The commands started through envd, by pid.
#[derive(Clone, Default)]
pub struct Processes(Arc<Table>);

#[derive(Default)]
struct Table {
    next: AtomicU32,
    running: Mutex<HashMap<u32, Running>>,
}

struct Running {
    sandbox: String,
    config: serde_json::Value,
    tag: Option<String>,
    stop: CancellationToken,
}

impl Processes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Running>> {
        self.0.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self, running: Running) -> u32 {
        let pid = FIRST_PID + self.0.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(pid, running);
        pid
    }

    fn forget(&self, pid: u32) {
        self.lock().remove(&pid);
    }

    /// Stops and forgets every command of a sandbox that is gone.
    pub fn forget_sandbox(&self, sandbox: &str) {
        self.lock().retain(|_, r| {
            let keep = r.sandbox != sandbox;
            if !keep {
                r.stop.cancel();
            }
            keep
        });
    }
}

/// `ProcessConfig` in proto3 JSON.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
struct ProcessConfig {
    cmd: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    envs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cwd: Option<String>,
}

/// `StartRequest` in proto3 JSON.
#[derive(Debug, Deserialize)]
struct StartRequest {
    process: ProcessConfig,
    #[serde(default)]
    pty: Option<serde_json::Value>,
    #[serde(default)]
    tag: Option<String>,
}

/// The command text: the `bash -l -c <cmd>` the SDKs send, or the argv quoted for a shell.
fn command_text(process: &ProcessConfig) -> String {
    match process.args.as_slice() {
        [login, c, cmd] if process.cmd.ends_with("bash") && login == "-l" && c == "-c" => {
            cmd.clone()
        }
        [c, cmd] if process.cmd.ends_with("sh") && c == "-c" => cmd.clone(),
        args => std::iter::once(&process.cmd)
            .chain(args)
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn event(event: serde_json::Value) -> Bytes {
    connect::envelope(&json!({ "event": event }))
}

fn data_event(stream: OutputStream, bytes: &[u8]) -> Bytes {
    let key = match stream {
        OutputStream::Stdout => "stdout",
        OutputStream::Stderr => "stderr",
    };
    let data = base64::engine::general_purpose::STANDARD.encode(bytes);
    event(json!({"data": {key: data}}))
}

/// The end event as envd writes it from Go's `ProcessState`: `exit status N`, with `error` unless 0.
fn exit_event(exit_code: i32) -> Bytes {
    let status = format!("exit status {exit_code}");
    let mut end = json!({"exitCode": exit_code, "exited": true, "status": status});
    if exit_code != 0 {
        end["error"] = json!(status);
    }
    event(json!({ "end": end }))
}

/// A command stopped by a signal: no exit code of its own.
fn killed_event() -> Bytes {
    event(
        json!({"end": {"exitCode": -1, "exited": false, "status": "signal: killed", "error": "signal: killed"}}),
    )
}

fn header_secs(headers: &HeaderMap, name: &str) -> Result<Option<Duration>, ConnectError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().parse::<u64>())
        .transpose()
        .map_err(|_| ConnectError::new(Code::InvalidArgument, format!("{name} is not a number")))
        .map(|v| v.map(Duration::from_secs))
}

fn deadline(headers: &HeaderMap) -> Result<Option<Duration>, ConnectError> {
    headers
        .get("connect-timeout-ms")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().parse::<u64>().map(Duration::from_millis))
        .transpose()
        .map_err(|_| ConnectError::new(Code::InvalidArgument, "Connect-Timeout-Ms is not a number"))
}

/// What a started command needs.
struct Launch {
    spec: CommandSpec,
    deadline: Option<Duration>,
    keepalive: Option<Duration>,
}

/// The runtime's command for `request`: run from its working directory (the home by default) with the
/// home as `HOME`, `/home/user` paths pointed at it.
async fn launch(
    state: &ServerState,
    target: &EnvdTarget,
    headers: &HeaderMap,
    request: &StartRequest,
) -> Result<Launch, ConnectError> {
    if request.pty.is_some() {
        return Err(ConnectError::new(
            Code::Unimplemented,
            "e2b-local does not run commands in a PTY",
        ));
    }
    let fs = SandboxFs::open(&state.runtime, &target.0).await?;
    let cwd = match request.process.cwd.as_deref() {
        Some(cwd) => fs.resolve(cwd)?.real,
        None => fs.home().to_path_buf(),
    };
    if !tokio::fs::metadata(&cwd).await.is_ok_and(|m| m.is_dir()) {
        return Err(ConnectError::new(
            Code::InvalidArgument,
            format!(
                "cwd '{}' does not exist",
                request.process.cwd.as_deref().unwrap_or(super::paths::HOME)
            ),
        ));
    }
    let script = format!(
        "cd -- {} || exit 1\n{}",
        shell_quote(&cwd.to_string_lossy()),
        fs.map_command(&command_text(&request.process))
    );
    let deadline = deadline(headers)?;
    let mut spec = CommandSpec::new(script, deadline.unwrap_or(NO_DEADLINE));
    spec.envs = request.process.envs.clone();
    spec.envs
        .insert("HOME".into(), fs.home().to_string_lossy().into_owned());
    Ok(Launch {
        spec,
        deadline,
        keepalive: header_secs(headers, "keepalive-ping-interval")?,
    })
}

/// Ticks every `interval`, or never.
async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Runs one command to its end, sending its events to `tx` (sends to a client that went away are
/// dropped; the command goes on).
async fn run(
    state: ServerState,
    target: EnvdTarget,
    mut launch: Launch,
    pid: u32,
    stop: CancellationToken,
    tx: UnboundedSender<Bytes>,
) {
    let _ = tx.send(event(json!({"start": {"pid": pid}})));
    let sink_tx = tx.clone();
    launch.spec.output = Some(OutputSink(Arc::new(move |stream, text: &str| {
        let _ = sink_tx.send(data_event(stream, text.as_bytes()));
    })));
    let mut keepalive = launch.keepalive.map(|every| {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    if let Some(interval) = keepalive.as_mut() {
        // The first tick is immediate; the stream just started.
        interval.tick().await;
    }
    // Boxed (async_trait's), so dropping it below really ends it.
    let mut command = state.runtime.run(&target.0, launch.spec);
    let ended = loop {
        tokio::select! {
            out = &mut command => break Some(out),
            () = stop.cancelled() => break None,
            () = tick(&mut keepalive) => {
                let _ = tx.send(event(json!({"keepalive": {}})));
            }
        }
    };
    match ended {
        Some(Ok(out)) => {
            let _ = tx.send(exit_event(out.exit_code));
            let _ = tx.send(connect::end_stream(Ok(())));
        }
        Some(Err(SandboxError::TimedOut(_))) if launch.deadline.is_some() => {
            let _ = tx.send(connect::end_stream(Err(ConnectError::new(
                Code::DeadlineExceeded,
                "context deadline exceeded",
            ))));
        }
        Some(Err(e)) => {
            let _ = tx.send(connect::end_stream(Err(e.into())));
        }
        None => {
            // Dropping the runtime's command kills its process group.
            drop(command);
            let _ = tx.send(killed_event());
            let _ = tx.send(connect::end_stream(Ok(())));
        }
    }
    state.processes.forget(pid);
}

/// `POST /process.Process/Start`: a server stream; errors travel in its end-of-stream message.
#[tracing::instrument(skip_all, fields(sandbox_id = %target.0))]
pub async fn start(
    State(state): State<ServerState>,
    Extension(target): Extension<EnvdTarget>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let started = async {
        let request: StartRequest = connect::stream_request(&headers, &body)?;
        let launch = launch(&state, &target, &headers, &request).await?;
        Ok::<_, ConnectError>((request, launch))
    }
    .await;
    match started {
        Err(e) => {
            let _ = tx.send(connect::end_stream(Err(e)));
        }
        Ok((request, launch)) => {
            let stop = CancellationToken::new();
            let pid = state.processes.register(Running {
                sandbox: target.0.as_str().to_owned(),
                config: serde_json::to_value(&request.process).unwrap_or_default(),
                tag: request.tag,
                stop: stop.clone(),
            });
            tokio::spawn(run(state.clone(), target, launch, pid, stop, tx));
        }
    }
    let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx)
        .map(Ok::<_, std::convert::Infallible>);
    (
        [(header::CONTENT_TYPE, connect::STREAM_JSON)],
        Body::from_stream(stream),
    )
        .into_response()
}

/// `ProcessSelector` in proto3 JSON.
#[derive(Debug, Deserialize)]
struct Selector {
    #[serde(default)]
    pid: Option<u32>,
    #[serde(default)]
    tag: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SignalRequest {
    process: Selector,
}

/// `POST /process.Process/SendSignal`: SIGTERM and SIGKILL both stop the command (its process group).
#[tracing::instrument(skip_all, fields(sandbox_id = %target.0))]
pub async fn send_signal(
    State(state): State<ServerState>,
    Extension(target): Extension<EnvdTarget>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request: SignalRequest = match connect::unary_request(&headers, &body) {
        Ok(request) => request,
        Err(e) => return e.into_response(),
    };
    let stopped = state.processes.lock().iter().find_map(|(pid, r)| {
        let mine = r.sandbox == target.0.as_str();
        let chosen = match (&request.process.pid, &request.process.tag) {
            (Some(wanted), _) => wanted == pid,
            (None, Some(tag)) => r.tag.as_ref() == Some(tag),
            (None, None) => false,
        };
        (mine && chosen).then(|| r.stop.clone())
    });
    match stopped {
        Some(stop) => {
            stop.cancel();
            connect::unary(json!({}))
        }
        None => ConnectError::new(
            Code::NotFound,
            format!("process {:?} not found", request.process),
        )
        .into_response(),
    }
}

/// `POST /process.Process/List`: the sandbox's running commands.
#[tracing::instrument(skip_all, fields(sandbox_id = %target.0))]
pub async fn list(
    State(state): State<ServerState>,
    Extension(target): Extension<EnvdTarget>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = connect::unary_request::<serde_json::Value>(&headers, &body) {
        return e.into_response();
    }
    let processes: Vec<serde_json::Value> = state
        .processes
        .lock()
        .iter()
        .filter(|(_, r)| r.sandbox == target.0.as_str())
        .map(|(pid, r)| {
            let mut info = json!({"config": r.config, "pid": pid});
            if let Some(tag) = &r.tag {
                info["tag"] = json!(tag);
            }
            info
        })
        .collect();
    connect::unary(json!({ "processes": processes }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdk_shell_form_is_unwrapped() {
        let process = ProcessConfig {
            cmd: "/bin/bash".into(),
            args: vec!["-l".into(), "-c".into(), "echo hi".into()],
            envs: Default::default(),
            cwd: None,
        };
        assert_eq!(command_text(&process), "echo hi");
        let argv = ProcessConfig {
            cmd: "ls".into(),
            args: vec!["it's".into()],
            ..process
        };
        assert_eq!(command_text(&argv), r"'ls' 'it'\''s'");
    }

    #[test]
    fn end_events_carry_error_unless_the_exit_was_clean() {
        let decode = |b: Bytes| -> serde_json::Value { serde_json::from_slice(&b[5..]).unwrap() };
        let ok = decode(exit_event(0));
        assert_eq!(ok["event"]["end"]["exitCode"], 0);
        assert!(ok["event"]["end"].get("error").is_none());
        let failed = decode(exit_event(2));
        assert_eq!(failed["event"]["end"]["error"], "exit status 2");
        let killed = decode(killed_event());
        assert_eq!(killed["event"]["end"]["exited"], false);
    }
}
