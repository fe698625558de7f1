//! The platform API handlers: each parses its request, calls the runtime and answers as the spec says.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use domain::ports::{PauseOutcome, ProviderState, SandboxError, SandboxSpec};
use domain::{JobId, ProjectId, SandboxId, UserId};
use serde::Deserialize;

use super::wire::{self, ApiError, NewSandbox, Sandbox, SandboxDetail, SandboxMeta, TimeoutBody};
use super::ServerState;

/// The largest page `GET /v2/sandboxes` returns (the spec's maximum).
const MAX_PAGE: usize = 100;

fn sandbox_id(raw: &str) -> Result<SandboxId, ApiError> {
    SandboxId::try_from(raw)
        .map_err(|_| ApiError(SandboxError::NotFound(format!("sandbox {raw} not found"))))
}

/// A visible sandbox id: parsed, and not hidden by the fault configuration.
fn visible(state: &ServerState, raw: &str) -> Result<SandboxId, ApiError> {
    state.check_visible(raw)?;
    sandbox_id(raw)
}

fn required<'a>(metadata: &'a BTreeMap<String, String>, key: &str) -> Result<&'a str, ApiError> {
    metadata
        .get(key)
        .map(String::as_str)
        .ok_or_else(|| ApiError(SandboxError::Invalid(format!("metadata.{key} is required"))))
}

/// `NewSandbox` to the runtime's spec: the local server needs the job, user and project in the metadata.
fn spec_of(body: &NewSandbox) -> Result<SandboxSpec, ApiError> {
    let invalid = |field: &str| {
        ApiError(SandboxError::Invalid(format!(
            "metadata.{field} is invalid"
        )))
    };
    Ok(SandboxSpec {
        job_id: JobId::parse(required(&body.metadata, "job_id")?).map_err(|_| invalid("job_id"))?,
        user_id: UserId::try_from(required(&body.metadata, "user_id")?)
            .map_err(|_| invalid("user_id"))?,
        project_id: ProjectId::parse(required(&body.metadata, "project_id")?)
            .map_err(|_| invalid("project_id"))?,
        timeout: Duration::from_secs(body.timeout.into()),
        auto_pause: body.auto_pause,
    })
}

fn secs(timeout: u32) -> chrono::Duration {
    chrono::Duration::seconds(timeout.into())
}

/// `POST /sandboxes` → 201 `Sandbox`.
#[tracing::instrument(skip_all, fields(sandbox_id = tracing::field::Empty))]
pub async fn create(
    State(state): State<ServerState>,
    Json(body): Json<NewSandbox>,
) -> Result<Response, ApiError> {
    let spec = spec_of(&body)?;
    let id = state.runtime.create(&spec).await?;
    tracing::Span::current().record("sandbox_id", id.as_str());
    let now = Utc::now();
    let meta = SandboxMeta {
        template_id: body.template_id,
        metadata: body.metadata,
        started_at: now,
        end_at: now + secs(body.timeout),
        envd_access_token: Some(uuid::Uuid::new_v4().simple().to_string()),
    };
    let answer = Sandbox::new(id.as_str(), &meta);
    if let Ok(mut registry) = state.registry.lock() {
        registry.insert(id.as_str().to_owned(), meta);
    }
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

fn meta_or_adopted(state: &ServerState, id: &str) -> SandboxMeta {
    state.meta(id).unwrap_or_else(|| SandboxMeta::adopted(None))
}

/// `GET /sandboxes/{id}` → `SandboxDetail`.
#[tracing::instrument(skip_all, fields(sandbox_id = %raw))]
pub async fn detail(
    State(state): State<ServerState>,
    Path(raw): Path<String>,
) -> Result<Json<SandboxDetail>, ApiError> {
    let id = visible(&state, &raw)?;
    let provider_state = state.runtime.state(&id).await?;
    let meta = meta_or_adopted(&state, id.as_str());
    Ok(Json(SandboxDetail::new(
        id.as_str(),
        &meta,
        provider_state,
        true,
    )))
}

/// The query of `GET /v2/sandboxes`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    metadata: Option<String>,
    state: Option<String>,
    next_token: Option<String>,
    limit: Option<usize>,
}

/// `metadata=k1=v1&k2=v2`, each key and value URL-encoded inside the (itself encoded) parameter.
fn metadata_filter(raw: Option<&str>) -> Result<HashMap<String, String>, ApiError> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(HashMap::new());
    };
    let pairs: Vec<(String, String)> = decode_pairs(raw)
        .ok_or_else(|| ApiError(SandboxError::Invalid("metadata filter is malformed".into())))?;
    Ok(pairs.into_iter().collect())
}

fn decode_pairs(raw: &str) -> Option<Vec<(String, String)>> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn state_filter(raw: Option<&str>) -> Result<Vec<ProviderState>, ApiError> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(vec![ProviderState::Running, ProviderState::Paused]);
    };
    raw.split(',')
        .map(|s| match s.trim() {
            "running" => Ok(ProviderState::Running),
            "paused" => Ok(ProviderState::Paused),
            other => Err(ApiError(SandboxError::Invalid(format!(
                "unknown state {other:?}"
            )))),
        })
        .collect()
}

/// `GET /v2/sandboxes` → `[ListedSandbox]`, newest first, `X-Next-Token` while more remain.
#[tracing::instrument(skip_all)]
pub async fn list(
    State(state): State<ServerState>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let wanted_meta = metadata_filter(query.metadata.as_deref())?;
    let wanted_states = state_filter(query.state.as_deref())?;
    let limit = query.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
    let offset = match query.next_token.as_deref() {
        None | Some("") => 0,
        Some(token) => token
            .parse::<usize>()
            .map_err(|_| ApiError(SandboxError::Invalid("nextToken is invalid".into())))?,
    };
    let faults = state.faults();
    let mut matching: Vec<SandboxDetail> = state
        .runtime
        .list()
        .await?
        .into_iter()
        .filter(|s| !faults.hides(s.sandbox_id.as_str()) && wanted_states.contains(&s.state))
        .map(|s| {
            let id = s.sandbox_id.as_str();
            let meta = state
                .meta(id)
                .unwrap_or_else(|| SandboxMeta::adopted(s.job_id.map(|j| j.to_string())));
            SandboxDetail::new(id, &meta, s.state, false)
        })
        .filter(|d| {
            wanted_meta
                .iter()
                .all(|(k, v)| d.metadata.get(k) == Some(v))
        })
        .collect();
    matching.sort_by(|a, b| {
        b.started_at
            .cmp(&a.started_at)
            .then_with(|| a.sandbox_id.cmp(&b.sandbox_id))
    });
    let total = matching.len();
    let page: Vec<SandboxDetail> = matching.into_iter().skip(offset).take(limit).collect();
    let mut headers = HeaderMap::new();
    if offset + page.len() < total {
        headers.insert(
            "x-next-token",
            HeaderValue::from((offset + page.len()) as u64),
        );
    }
    Ok((headers, Json(page)).into_response())
}

/// `POST /sandboxes/{id}/pause` → 204, or 409 when already paused; fails with 500 when the fault says so.
#[tracing::instrument(skip_all, fields(sandbox_id = %raw))]
pub async fn pause(
    State(state): State<ServerState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = visible(&state, &raw)?;
    if state.faults().pause_fails() {
        tracing::warn!("failing this pause (injected)");
        return Ok(wire::error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "failed to pause sandbox (injected fault)",
        ));
    }
    if state.runtime.state(&id).await? == ProviderState::Paused {
        return Ok(wire::error_response(
            StatusCode::CONFLICT,
            &format!("sandbox {raw} is already paused"),
        ));
    }
    match state.runtime.pause(&id).await? {
        PauseOutcome::Paused => Ok(StatusCode::NO_CONTENT.into_response()),
        PauseOutcome::AlreadyPaused => Ok(wire::error_response(
            StatusCode::CONFLICT,
            &format!("sandbox {raw} is already paused"),
        )),
    }
}

/// `POST /sandboxes/{id}/connect` → 200 when it was running, 201 when it was resumed.
#[tracing::instrument(skip_all, fields(sandbox_id = %raw))]
pub async fn connect(
    State(state): State<ServerState>,
    Path(raw): Path<String>,
    Json(body): Json<TimeoutBody>,
) -> Result<Response, ApiError> {
    let id = visible(&state, &raw)?;
    let before = state.runtime.state(&id).await?;
    state
        .runtime
        .connect(&id, Duration::from_secs(body.timeout.into()))
        .await?;
    state.update_meta(id.as_str(), |m| m.end_at = Utc::now() + secs(body.timeout));
    let meta = meta_or_adopted(&state, id.as_str());
    let status = match before {
        ProviderState::Paused => StatusCode::CREATED,
        ProviderState::Running => StatusCode::OK,
    };
    Ok((status, Json(Sandbox::new(id.as_str(), &meta))).into_response())
}

/// `POST /sandboxes/{id}/timeout` → 204.
#[tracing::instrument(skip_all, fields(sandbox_id = %raw))]
pub async fn set_timeout(
    State(state): State<ServerState>,
    Path(raw): Path<String>,
    Json(body): Json<TimeoutBody>,
) -> Result<StatusCode, ApiError> {
    let id = visible(&state, &raw)?;
    state
        .runtime
        .set_timeout(&id, Duration::from_secs(body.timeout.into()))
        .await?;
    state.update_meta(id.as_str(), |m| m.end_at = Utc::now() + secs(body.timeout));
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /sandboxes/{id}` → 204.
#[tracing::instrument(skip_all, fields(sandbox_id = %raw))]
pub async fn kill(
    State(state): State<ServerState>,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = visible(&state, &raw)?;
    let result = state.runtime.kill(&id).await;
    if matches!(result, Ok(()) | Err(SandboxError::NotFound(_))) {
        if let Ok(mut registry) = state.registry.lock() {
            registry.remove(id.as_str());
        }
    }
    result?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_filter_decodes_each_pair() {
        let filter = metadata_filter(Some("slipway=1&job%5Fid=a%20b"))
            .ok()
            .unwrap();
        assert_eq!(filter.get("slipway").map(String::as_str), Some("1"));
        assert_eq!(filter.get("job_id").map(String::as_str), Some("a b"));
        assert!(metadata_filter(Some("novalue")).is_err());
    }

    #[test]
    fn state_filter_defaults_to_both() {
        assert_eq!(state_filter(None).ok().unwrap().len(), 2);
        assert_eq!(
            state_filter(Some("paused")).ok().unwrap(),
            vec![ProviderState::Paused]
        );
        assert!(state_filter(Some("gone")).is_err());
    }
}
