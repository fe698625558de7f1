//! `filesystem.Filesystem` (unary calls): `ListDir`, `Stat`, `MakeDir` and `Remove` on the sandbox's home,
//! with entries as envd describes them (`EntryInfo` in proto3 JSON).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::json;

use super::super::{EnvdTarget, ServerState};
use super::connect::{self, Code, ConnectError};
use super::paths::{io_error, Resolved, SandboxFs};

/// Go's `os.ModeDir` and `os.ModeSymlink`, which envd's `mode` carries.
const GO_MODE_DIR: u32 = 1 << 31;
const GO_MODE_SYMLINK: u32 = 1 << 27;

#[derive(Debug, Deserialize)]
struct PathRequest {
    path: String,
    #[serde(default)]
    depth: Option<u32>,
}

/// `rwxr-xr-x` for the permission bits.
fn permission_string(mode: u32) -> String {
    (0..9)
        .map(|i| {
            let bit = 1 << (8 - i);
            if mode & bit == 0 {
                '-'
            } else {
                ['r', 'w', 'x'][i % 3]
            }
        })
        .collect()
}

/// `EntryInfo` for the entry at `real`, shown at `logical`; symlinks are described, not followed.
async fn entry_info(logical: &str, real: &Path) -> Result<serde_json::Value, ConnectError> {
    let meta = tokio::fs::symlink_metadata(real)
        .await
        .map_err(|e| io_error(&format!("path '{logical}'"), &e))?;
    let perm = meta.permissions().mode() & 0o777;
    let (kind, mode, prefix) = if meta.file_type().is_symlink() {
        ("FILE_TYPE_SYMLINK", perm | GO_MODE_SYMLINK, 'L')
    } else if meta.is_dir() {
        ("FILE_TYPE_DIRECTORY", perm | GO_MODE_DIR, 'd')
    } else {
        ("FILE_TYPE_FILE", perm, '-')
    };
    let name = Path::new(logical)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".to_owned());
    let modified: DateTime<Utc> = meta
        .modified()
        .map(Into::into)
        .unwrap_or_else(|_| Utc::now());
    let mut info = json!({
        "name": name,
        "type": kind,
        "path": logical,
        // int64 is a string in proto3 JSON.
        "size": meta.len().to_string(),
        "mode": mode,
        "permissions": format!("{prefix}{}", permission_string(perm)),
        "owner": "user",
        "group": "user",
        "modifiedTime": modified.to_rfc3339_opts(SecondsFormat::Nanos, true),
    });
    if meta.file_type().is_symlink() {
        if let Ok(target) = tokio::fs::read_link(real).await {
            info["symlinkTarget"] = json!(target.to_string_lossy());
        }
    }
    Ok(info)
}

async fn open(
    state: &ServerState,
    target: &EnvdTarget,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(SandboxFs, PathRequest, Resolved), ConnectError> {
    let request: PathRequest = connect::unary_request(headers, body)?;
    let fs = SandboxFs::open(&state.runtime, &target.0).await?;
    let resolved = fs.resolve(&request.path)?;
    Ok((fs, request, resolved))
}

fn answer(result: Result<serde_json::Value, ConnectError>) -> Response {
    match result {
        Ok(message) => connect::unary(message),
        Err(e) => e.into_response(),
    }
}

/// The entries under `dir` down to `depth` levels, symlinked directories not entered.
async fn walk(dir: Resolved, depth: u32) -> Result<Vec<serde_json::Value>, ConnectError> {
    let mut entries = Vec::new();
    let mut pending = vec![(dir, 1)];
    while let Some((dir, level)) = pending.pop() {
        let mut read = tokio::fs::read_dir(&dir.real)
            .await
            .map_err(|e| io_error(&format!("directory '{}'", dir.logical), &e))?;
        while let Some(entry) = read
            .next_entry()
            .await
            .map_err(|e| io_error(&format!("directory '{}'", dir.logical), &e))?
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let child = Resolved {
                logical: format!("{}/{name}", dir.logical.trim_end_matches('/')),
                real: entry.path(),
            };
            entries.push(entry_info(&child.logical, &child.real).await?);
            let is_dir = entry.file_type().await.is_ok_and(|t| t.is_dir());
            if is_dir && level < depth {
                pending.push((child, level + 1));
            }
        }
    }
    entries.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    Ok(entries)
}

/// `POST /filesystem.Filesystem/ListDir`.
pub async fn list_dir(
    State(state): State<ServerState>,
    Extension(target): Extension<EnvdTarget>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(
        async {
            let (_, request, dir) = open(&state, &target, &headers, &body).await?;
            if !tokio::fs::metadata(&dir.real)
                .await
                .map_err(|e| io_error(&format!("directory '{}'", dir.logical), &e))?
                .is_dir()
            {
                return Err(ConnectError::new(
                    Code::InvalidArgument,
                    format!("path '{}' is not a directory", dir.logical),
                ));
            }
            let depth = request.depth.unwrap_or(1).max(1);
            Ok(json!({ "entries": walk(dir, depth).await? }))
        }
        .await,
    )
}

/// `POST /filesystem.Filesystem/Stat`.
pub async fn stat(
    State(state): State<ServerState>,
    Extension(target): Extension<EnvdTarget>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(
        async {
            let (_, _, path) = open(&state, &target, &headers, &body).await?;
            Ok(json!({ "entry": entry_info(&path.logical, &path.real).await? }))
        }
        .await,
    )
}

/// `POST /filesystem.Filesystem/MakeDir`: parents included; an existing directory is `already_exists`.
pub async fn make_dir(
    State(state): State<ServerState>,
    Extension(target): Extension<EnvdTarget>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(
        async {
            let (_, _, path) = open(&state, &target, &headers, &body).await?;
            if tokio::fs::symlink_metadata(&path.real).await.is_ok() {
                return Err(ConnectError::new(
                    Code::AlreadyExists,
                    format!("directory '{}' already exists", path.logical),
                ));
            }
            tokio::fs::create_dir_all(&path.real)
                .await
                .map_err(|e| io_error(&format!("directory '{}'", path.logical), &e))?;
            Ok(json!({ "entry": entry_info(&path.logical, &path.real).await? }))
        }
        .await,
    )
}

/// `POST /filesystem.Filesystem/Remove`: a file or a whole directory.
pub async fn remove(
    State(state): State<ServerState>,
    Extension(target): Extension<EnvdTarget>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(
        async {
            let (_, _, path) = open(&state, &target, &headers, &body).await?;
            let meta = tokio::fs::symlink_metadata(&path.real)
                .await
                .map_err(|e| io_error(&format!("path '{}'", path.logical), &e))?;
            let removed = if meta.is_dir() {
                tokio::fs::remove_dir_all(&path.real).await
            } else {
                tokio::fs::remove_file(&path.real).await
            };
            removed.map_err(|e| io_error(&format!("path '{}'", path.logical), &e))?;
            Ok(json!({}))
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_read_like_go() {
        assert_eq!(permission_string(0o755), "rwxr-xr-x");
        assert_eq!(permission_string(0o640), "rw-r-----");
    }
}
