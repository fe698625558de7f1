//! envd's `/files` (`envd.yaml`): download one file, upload files (multipart `file` parts named by their
//! paths, or one `application/octet-stream` body at `?path=`), parents created. Errors are envd's
//! `{"code", "message"}` JSON. These routes are outside envd's token middleware and check the token
//! themselves: a secure sandbox wants it in `X-Access-Token` (signed URLs are not supported here).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Extension, FromRequest, Multipart, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::super::wire::error_response;
use super::super::{EnvdTarget, ServerState};
use super::connect::{Code, ConnectError};
use super::paths::{io_error, SandboxFs};

/// The users envd knows in a sandbox (`username=`); relative paths resolve against `/home/user` for both.
const USERS: &[&str] = &["user", "root"];

/// envd's REST `EntryInfo`.
#[derive(Debug, Serialize)]
pub struct EntryInfo {
    path: String,
    name: String,
    r#type: &'static str,
}

/// An error as envd's REST API answers it.
pub struct FilesError(StatusCode, String);

impl From<ConnectError> for FilesError {
    fn from(e: ConnectError) -> Self {
        let status = match e.code {
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::InvalidArgument | Code::AlreadyExists => StatusCode::BAD_REQUEST,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self(status, e.message)
    }
}

impl IntoResponse for FilesError {
    fn into_response(self) -> Response {
        error_response(self.0, &self.1)
    }
}

fn unauthorized(message: &str) -> FilesError {
    FilesError(StatusCode::UNAUTHORIZED, message.to_owned())
}

/// envd's check for `/files`: the token in the header, else a signature.
fn authorize(
    state: &ServerState,
    target: &EnvdTarget,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<(), FilesError> {
    let meta = state.registry.get_or_adopt(target.0.as_str(), None);
    let Some(token) = meta.token else {
        return Ok(());
    };
    match headers.get("x-access-token").and_then(|v| v.to_str().ok()) {
        Some(given) if token.matches(given) => Ok(()),
        Some(_) => Err(unauthorized(
            "access token present in header but does not match",
        )),
        None if query.contains_key("signature") => Err(unauthorized(
            "invalid signature (e2b-local does not serve signed URLs)",
        )),
        None => Err(unauthorized("missing signature query parameter")),
    }
}

fn check_user(query: &HashMap<String, String>) -> Result<(), FilesError> {
    match query.get("username").map(String::as_str) {
        None | Some("") => Ok(()),
        Some(user) if USERS.contains(&user) => Ok(()),
        Some(user) => Err(unauthorized(&format!(
            "error looking up user '{user}': user: unknown user {user}"
        ))),
    }
}

/// `GET /files?path=…`: the file's bytes.
#[tracing::instrument(skip_all, fields(sandbox_id = %target.0))]
pub async fn read(
    State(state): State<ServerState>,
    Extension(target): Extension<EnvdTarget>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, FilesError> {
    authorize(&state, &target, &headers, &query)?;
    check_user(&query)?;
    let fs = SandboxFs::open(&state.runtime, &target.0).await?;
    let path = fs.resolve(query.get("path").map(String::as_str).unwrap_or(""))?;
    let meta = tokio::fs::metadata(&path.real).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            FilesError(
                StatusCode::NOT_FOUND,
                format!("path '{}' does not exist", path.logical),
            )
        } else {
            io_error(&format!("path '{}'", path.logical), &e).into()
        }
    })?;
    if meta.is_dir() {
        return Err(FilesError(
            StatusCode::BAD_REQUEST,
            format!("path '{}' is a directory", path.logical),
        ));
    }
    let bytes = tokio::fs::read(&path.real)
        .await
        .map_err(|e| FilesError::from(io_error(&format!("path '{}'", path.logical), &e)))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

/// Writes one file, parents first; answers its entry.
async fn write_one(fs: &SandboxFs, path: &str, data: &[u8]) -> Result<EntryInfo, FilesError> {
    let path = fs.resolve(path)?;
    if tokio::fs::metadata(&path.real)
        .await
        .is_ok_and(|m| m.is_dir())
    {
        return Err(FilesError(
            StatusCode::BAD_REQUEST,
            format!("path '{}' is a directory", path.logical),
        ));
    }
    if let Some(parent) = path.real.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| FilesError::from(io_error("create the parent directories", &e)))?;
    }
    tokio::fs::write(&path.real, data)
        .await
        .map_err(|e| FilesError::from(io_error(&format!("path '{}'", path.logical), &e)))?;
    let name = path
        .logical
        .rsplit('/')
        .next()
        .unwrap_or(&path.logical)
        .to_owned();
    Ok(EntryInfo {
        path: path.logical,
        name,
        r#type: "file",
    })
}

/// `POST /files`: multipart `file` parts (named by path, or `?path=` for a single one) or an
/// `application/octet-stream` body at `?path=`.
#[tracing::instrument(skip_all, fields(sandbox_id = %target.0))]
pub async fn write(
    State(state): State<ServerState>,
    Extension(target): Extension<EnvdTarget>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Result<Json<Vec<EntryInfo>>, FilesError> {
    let headers = request.headers().clone();
    authorize(&state, &target, &headers, &query)?;
    check_user(&query)?;
    let fs = SandboxFs::open(&state.runtime, &target.0).await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bad = |message: String| FilesError(StatusCode::BAD_REQUEST, message);
    if content_type.starts_with("application/octet-stream") {
        let path = query.get("path").ok_or_else(|| {
            bad("the path query parameter is required with application/octet-stream".into())
        })?;
        let body = Bytes::from_request(request, &())
            .await
            .map_err(|e| bad(format!("cannot read the body: {e}")))?;
        return Ok(Json(vec![write_one(&fs, path, &body).await?]));
    }
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|e| bad(format!("bad multipart body: {e}")))?;
    let mut parts = Vec::new();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| bad(format!("bad multipart body: {e}")))?
    {
        if field.name() != Some("file") {
            continue;
        }
        let name = field.file_name().map(str::to_owned);
        let data = field
            .bytes()
            .await
            .map_err(|e| bad(format!("bad multipart body: {e}")))?;
        parts.push((name, data));
    }
    let single = parts.len() == 1;
    let mut written = Vec::with_capacity(parts.len());
    for (name, data) in parts {
        let path = match (query.get("path"), name) {
            (Some(path), _) if single => path.clone(),
            (_, Some(name)) => name,
            (_, None) => return Err(bad("a file part has no name".into())),
        };
        written.push(write_one(&fs, &path, &data).await?);
    }
    Ok(Json(written))
}
