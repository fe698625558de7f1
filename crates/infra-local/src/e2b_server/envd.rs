//! envd's endpoints over the runtime: `process.Process/Start` (a Connect server stream, JSON codec) and
//! `/files`. The sandbox is named by the `E2b-Sandbox-Id` header or a `{port}-{id}.…` host name.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Multipart, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use domain::ports::{CommandSpec, OutputSink, OutputStream, SandboxError};
use domain::SandboxId;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc::{self, UnboundedSender};

use super::wire::ApiError;
use super::ServerState;

/// The sandbox user's home, which relative envd paths resolve against.
const HOME: &str = "/home/user";
const CONNECT_JSON: &str = "application/connect+json";
const END_STREAM: u8 = 0x02;

/// The sandbox a request is for, checked against the fault configuration and the envd access token.
fn target(state: &ServerState, headers: &HeaderMap) -> Result<SandboxId, SandboxError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let raw = match header("e2b-sandbox-id") {
        Some(id) => id.to_owned(),
        None => header("host")
            .and_then(|host| host.split('.').next())
            .and_then(|label| label.split_once('-'))
            .map(|(_port, id)| id.to_owned())
            .ok_or_else(|| SandboxError::Invalid("no E2b-Sandbox-Id header".into()))?,
    };
    state.check_visible(&raw)?;
    let id = SandboxId::try_from(raw.as_str())
        .map_err(|_| SandboxError::NotFound(format!("sandbox {raw} not found")))?;
    if let Some(expected) = state.meta(&raw).and_then(|m| m.envd_access_token) {
        if header("x-access-token") != Some(expected.as_str()) {
            return Err(SandboxError::Unauthorized(
                "invalid envd access token".into(),
            ));
        }
    }
    Ok(id)
}

/// A path as envd reads it (absolute, or relative to the user's home) made relative to the workspace.
fn workspace_relative(state: &ServerState, path: &str) -> Result<String, SandboxError> {
    let abs = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{HOME}/{path}")
    };
    let workspace = state.runtime.workspace_path();
    abs.strip_prefix(workspace.as_str())
        .and_then(|rest| rest.strip_prefix('/'))
        .filter(|rest| !rest.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            SandboxError::Invalid(format!(
                "path {path:?} is outside the workspace {workspace}"
            ))
        })
}

// ---- process.Process/Start ----

#[derive(Debug, Deserialize)]
struct StartRequest {
    process: ProcessConfig,
}

#[derive(Debug, Deserialize)]
struct ProcessConfig {
    cmd: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    envs: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    cwd: Option<String>,
}

fn envelope(flags: u8, message: &serde_json::Value) -> Bytes {
    let body = message.to_string().into_bytes();
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(flags);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Bytes::from(out)
}

fn connect_code(err: &SandboxError) -> &'static str {
    match err {
        SandboxError::NotFound(_) => "not_found",
        SandboxError::Conflict(_) => "failed_precondition",
        SandboxError::Unauthorized(_) => "unauthenticated",
        SandboxError::Invalid(_) => "invalid_argument",
        SandboxError::TimedOut(_) => "deadline_exceeded",
        SandboxError::Unavailable(_) => "unavailable",
        SandboxError::Provider(_) => "internal",
    }
}

fn end_stream(result: Result<(), SandboxError>) -> Bytes {
    match result {
        Ok(()) => envelope(END_STREAM, &json!({})),
        Err(e) => envelope(
            END_STREAM,
            &json!({"error": {"code": connect_code(&e), "message": e.to_string()}}),
        ),
    }
}

fn start_event(pid: u32) -> Bytes {
    envelope(0, &json!({"event": {"start": {"pid": pid}}}))
}

fn data_event(stream: OutputStream, bytes: &[u8]) -> Bytes {
    let key = match stream {
        OutputStream::Stdout => "stdout",
        OutputStream::Stderr => "stderr",
    };
    let data = base64::engine::general_purpose::STANDARD.encode(bytes);
    envelope(0, &json!({"event": {"data": {key: data}}}))
}

fn end_event(exit_code: i32) -> Bytes {
    let status = format!("exit status {exit_code}");
    envelope(
        0,
        &json!({"event": {"end": {"exitCode": exit_code, "exited": true, "status": status}}}),
    )
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
            .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// Parses the single enveloped request message and the deadline header.
fn parse_start(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(CommandSpec, Option<Duration>), SandboxError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if content_type != Some(CONNECT_JSON) {
        return Err(SandboxError::Invalid(format!(
            "content type must be {CONNECT_JSON}"
        )));
    }
    let message = match body {
        [0, a, b, c, d, rest @ ..]
            if u32::from_be_bytes([*a, *b, *c, *d]) as usize == rest.len() =>
        {
            rest
        }
        _ => {
            return Err(SandboxError::Invalid(
                "request is not one uncompressed envelope".into(),
            ))
        }
    };
    let request: StartRequest = serde_json::from_slice(message)
        .map_err(|e| SandboxError::Invalid(format!("malformed StartRequest: {e}")))?;
    let deadline = headers
        .get("connect-timeout-ms")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.parse::<u64>().map(Duration::from_millis))
        .transpose()
        .map_err(|_| SandboxError::Invalid("Connect-Timeout-Ms is not a number".into()))?;
    let mut spec = CommandSpec::new(command_text(&request.process), deadline.unwrap_or_default());
    spec.envs = request.process.envs;
    spec.cwd = request.process.cwd;
    Ok((spec, deadline))
}

async fn run_foreground(
    state: ServerState,
    id: SandboxId,
    mut spec: CommandSpec,
    tx: UnboundedSender<Bytes>,
) {
    // A foreground run has no pid to report through the port; 0 stands for "not known".
    let _ = tx.send(start_event(0));
    let streamed = Arc::new(AtomicBool::new(false));
    let sink_tx = tx.clone();
    let sink_streamed = streamed.clone();
    spec.output = Some(OutputSink(Arc::new(move |stream, text: &str| {
        sink_streamed.store(true, Ordering::Relaxed);
        let _ = sink_tx.send(data_event(stream, text.as_bytes()));
    })));
    // The command keeps running if the client goes away: sends to a closed stream are ignored.
    match state.runtime.run(&id, spec).await {
        Ok(out) => {
            if !streamed.load(Ordering::Relaxed) {
                for (stream, text) in [
                    (OutputStream::Stdout, &out.stdout),
                    (OutputStream::Stderr, &out.stderr),
                ] {
                    if !text.is_empty() {
                        let _ = tx.send(data_event(stream, text.as_bytes()));
                    }
                }
            }
            let _ = tx.send(end_event(out.exit_code));
            let _ = tx.send(end_stream(Ok(())));
        }
        Err(e) => {
            let _ = tx.send(end_stream(Err(e)));
        }
    }
}

/// `POST /process.Process/Start`: a server stream of start, data and end events. Errors travel in the
/// end-of-stream message with HTTP 200, as the Connect protocol does for streams.
#[tracing::instrument(skip_all, fields(sandbox_id = tracing::field::Empty))]
pub async fn start(State(state): State<ServerState>, headers: HeaderMap, body: Bytes) -> Response {
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    match target(&state, &headers).and_then(|id| Ok((id, parse_start(&headers, &body)?))) {
        Err(e) => {
            let _ = tx.send(end_stream(Err(e)));
        }
        Ok((id, (spec, Some(_deadline)))) => {
            tracing::Span::current().record("sandbox_id", id.as_str());
            tokio::spawn(run_foreground(state, id, spec, tx));
        }
        Ok((id, (spec, None))) => {
            tracing::Span::current().record("sandbox_id", id.as_str());
            let result = state.runtime.run_background(&id, spec).await;
            match result {
                Ok(pid) => {
                    let _ = tx.send(start_event(pid.pid));
                    let _ = tx.send(end_stream(Ok(())));
                }
                Err(e) => {
                    let _ = tx.send(end_stream(Err(e)));
                }
            }
        }
    }
    let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(Ok::<_, Infallible>);
    (
        [(header::CONTENT_TYPE, CONNECT_JSON)],
        Body::from_stream(stream),
    )
        .into_response()
}

// ---- /files ----

#[derive(Debug, Deserialize)]
pub struct FileQuery {
    path: Option<String>,
}

/// envd's `EntryInfo`.
#[derive(Debug, Serialize)]
pub struct EntryInfo {
    path: String,
    name: String,
    r#type: &'static str,
}

async fn read_parts(
    mut multipart: Multipart,
) -> Result<Vec<(Option<String>, Vec<u8>)>, SandboxError> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        SandboxError::Invalid(format!("bad multipart body: {e}"))
    };
    let mut parts = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        if field.name() != Some("file") {
            continue;
        }
        let name = field.file_name().map(str::to_owned);
        parts.push((name, field.bytes().await.map_err(bad)?.to_vec()));
    }
    Ok(parts)
}

/// `POST /files`: multipart `file` parts, each named by its path (or the `path` query for a single one).
#[tracing::instrument(skip_all, fields(sandbox_id = tracing::field::Empty))]
pub async fn write_files(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Query(query): Query<FileQuery>,
    multipart: Multipart,
) -> Result<Json<Vec<EntryInfo>>, ApiError> {
    let id = target(&state, &headers)?;
    tracing::Span::current().record("sandbox_id", id.as_str());
    let parts = read_parts(multipart).await?;
    let single = parts.len() == 1;
    let mut files = Vec::with_capacity(parts.len());
    let mut entries = Vec::with_capacity(parts.len());
    for (name, data) in parts {
        let path = match (&query.path, name) {
            (Some(path), _) if single => path.clone(),
            (_, Some(name)) => name,
            (_, None) => return Err(SandboxError::Invalid("a file part has no name".into()).into()),
        };
        let rel = workspace_relative(&state, &path)?;
        let workspace = state.runtime.workspace_path();
        entries.push(EntryInfo {
            path: format!("{workspace}/{rel}"),
            name: rel.rsplit('/').next().unwrap_or(&rel).to_owned(),
            r#type: "file",
        });
        files.push((rel, data));
    }
    state.runtime.write_files(&id, files).await?;
    Ok(Json(entries))
}

/// `GET /files?path=…`: the file's bytes, 404 when missing.
#[tracing::instrument(skip_all, fields(sandbox_id = tracing::field::Empty))]
pub async fn read_file(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let id = target(&state, &headers)?;
    tracing::Span::current().record("sandbox_id", id.as_str());
    let path = query
        .get("path")
        .ok_or_else(|| SandboxError::Invalid("path is required".into()))?;
    let rel = workspace_relative(&state, path)?;
    let bytes = state.runtime.read_file(&id, &rel).await?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    )
        .into_response())
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
    fn envelopes_carry_big_endian_lengths() {
        let frame = end_stream(Ok(()));
        assert_eq!(&frame[..], &[END_STREAM, 0, 0, 0, 2, b'{', b'}']);
    }
}
