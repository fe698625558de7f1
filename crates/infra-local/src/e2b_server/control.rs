//! The platform API handlers: each parses its request, calls the runtime and answers as the spec says.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use domain::ports::{PauseOutcome, ProviderState, SandboxError, SandboxRuntime, SandboxSpec};
use domain::{JobId, ProjectId, SandboxId, UserId};
use serde::Deserialize;

use super::registry::{AccessToken, SandboxMeta};
use super::wire::{
    self, ApiError, NewSandbox, Sandbox, SandboxDetail, TimeoutBody, V1_DEFAULT_TIMEOUT,
    V2_DEFAULT_TIMEOUT,
};
use super::ServerState;

/// The largest page `GET /v2/sandboxes` returns (the spec's maximum).
const MAX_PAGE: usize = 100;
/// The user a sandbox without Slipway's metadata is recorded for in the local runtime.
const ANONYMOUS_USER: &str = "e2b-local";

fn sandbox_id(raw: &str) -> Result<SandboxId, ApiError> {
    SandboxId::try_from(raw).map_err(|_| ApiError(wire::not_found(raw)))
}

/// A visible sandbox id: parsed, and not hidden by the fault configuration.
fn visible(state: &ServerState, raw: &str) -> Result<SandboxId, ApiError> {
    state.check_visible(raw)?;
    sandbox_id(raw)
}

/// The runtime's error, with E2B's wording for a sandbox it does not have.
fn provider(raw: &str) -> impl Fn(SandboxError) -> ApiError + '_ {
    move |e| match e {
        SandboxError::NotFound(_) => ApiError(wire::not_found(raw)),
        other => ApiError(other),
    }
}

/// A JSON body parsed by hand, so that an empty one is `None` and a bad one a 400 in E2B's shape.
fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<Option<T>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body).map(Some).map_err(|e| {
        ApiError(SandboxError::Invalid(format!(
            "Error when parsing request: {e}"
        )))
    })
}

/// The runtime's spec for `body`: the local runtime files every sandbox under a job, a user and a
/// project, taken from Slipway's metadata when it is there and made up otherwise (any SDK user's).
fn spec_of(
    metadata: &BTreeMap<String, String>,
    timeout: u32,
    auto_pause: bool,
) -> Result<SandboxSpec, ApiError> {
    let get = |k: &str| metadata.get(k).map(String::as_str);
    let user_id = match get("user_id").and_then(|v| UserId::try_from(v).ok()) {
        Some(user) => user,
        None => UserId::try_from(ANONYMOUS_USER)
            .map_err(|e| ApiError(SandboxError::Provider(e.to_string())))?,
    };
    Ok(SandboxSpec {
        job_id: get("job_id")
            .and_then(|v| JobId::parse(v).ok())
            .unwrap_or_default(),
        user_id,
        project_id: get("project_id")
            .and_then(|v| ProjectId::parse(v).ok())
            .unwrap_or_default(),
        timeout: Duration::from_secs(timeout.into()),
        auto_pause,
    })
}

fn secs(timeout: u32) -> chrono::Duration {
    chrono::Duration::seconds(timeout.into())
}

/// Creates a sandbox; `secure` decides whether it gets an envd access token.
async fn create(
    state: &ServerState,
    body: NewSandbox,
    timeout: u32,
    secure: bool,
) -> Result<Response, ApiError> {
    let private = body
        .network
        .as_ref()
        .and_then(|n| n.allow_public_traffic)
        .is_some_and(|public| !public);
    let metadata = body.metadata.unwrap_or_default();
    let auto_pause = body.auto_pause.unwrap_or(false);
    let id = state
        .runtime
        .create(&spec_of(&metadata, timeout, auto_pause)?)
        .await?;
    tracing::Span::current().record("sandbox_id", id.as_str());
    let now = Utc::now();
    let meta = SandboxMeta {
        template_id: body.template_id,
        metadata,
        started_at: now,
        end_at: now + secs(timeout),
        auto_pause,
        token: secure.then(AccessToken::fresh),
        traffic: private.then(AccessToken::fresh),
    };
    state.registry.insert(id.as_str(), meta.clone());
    let answer = Sandbox::new(id.as_str(), &meta, &state.domain);
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `POST /sandboxes` → 201 `Sandbox`; secure only when asked (`secure: true`), as the spec says.
#[tracing::instrument(skip_all, fields(sandbox_id = tracing::field::Empty))]
pub async fn create_v1(
    State(state): State<ServerState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: NewSandbox = parse_body(&body)?
        .ok_or_else(|| ApiError(SandboxError::Invalid("a request body is required".into())))?;
    let timeout = body.timeout.unwrap_or(V1_DEFAULT_TIMEOUT);
    let secure = body.secure == Some(true);
    create(&state, body, timeout, secure).await
}

/// `POST /v2/sandboxes` → 201 `Sandbox`; always secure.
#[tracing::instrument(skip_all, fields(sandbox_id = tracing::field::Empty))]
pub async fn create_v2(
    State(state): State<ServerState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: NewSandbox = parse_body(&body)?
        .ok_or_else(|| ApiError(SandboxError::Invalid("a request body is required".into())))?;
    let timeout = body.timeout.unwrap_or(V2_DEFAULT_TIMEOUT);
    create(&state, body, timeout, true).await
}

/// `GET /sandboxes/{id}` → `SandboxDetail`, with the token, domain and lifecycle.
#[tracing::instrument(skip_all, fields(sandbox_id = %raw))]
pub async fn detail(
    State(state): State<ServerState>,
    Path(raw): Path<String>,
) -> Result<Json<SandboxDetail>, ApiError> {
    let id = visible(&state, &raw)?;
    let provider_state = state.runtime.state(&id).await.map_err(provider(&raw))?;
    let meta = state.registry.get_or_adopt(id.as_str(), None);
    Ok(Json(SandboxDetail::detail(
        id.as_str(),
        &meta,
        provider_state,
        &state.domain,
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
    order: Option<String>,
    template: Option<String>,
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

/// `GET /v2/sandboxes` → `[ListedSandbox]`, newest first unless `order=asc`, `X-Next-Token` while more
/// remain.
#[tracing::instrument(skip_all)]
pub async fn list(
    State(state): State<ServerState>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let wanted_meta = metadata_filter(query.metadata.as_deref())?;
    let wanted_states = state_filter(query.state.as_deref())?;
    let ascending = match query.order.as_deref() {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(other) => {
            return Err(ApiError(SandboxError::Invalid(format!(
                "unknown order {other:?}"
            ))))
        }
    };
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
                .registry
                .get_or_adopt(id, s.job_id.map(|j| j.to_string()));
            SandboxDetail::listed(id, &meta, s.state)
        })
        .filter(|d| {
            wanted_meta
                .iter()
                .all(|(k, v)| d.metadata.get(k) == Some(v))
        })
        .filter(|d| query.template.as_ref().is_none_or(|t| &d.template_id == t))
        .collect();
    matching.sort_by(|a, b| {
        let by_start = if ascending {
            a.started.cmp(&b.started)
        } else {
            b.started.cmp(&a.started)
        };
        by_start.then_with(|| a.sandbox_id.cmp(&b.sandbox_id))
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
            "Error pausing sandbox (injected fault)",
        ));
    }
    let already = || {
        wire::error_response(
            StatusCode::CONFLICT,
            &format!("Error pausing sandbox - sandbox '{raw}' is already paused"),
        )
    };
    match state.runtime.pause(&id).await.map_err(provider(&raw))? {
        PauseOutcome::Paused => {
            // A paused sandbox reports its pause time as its end, as E2B does.
            state
                .registry
                .update(id.as_str(), |meta| meta.end_at = Utc::now());
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        PauseOutcome::AlreadyPaused => Ok(already()),
    }
}

/// Connects: resumes a paused sandbox (201) or answers a running one (200). The timeout only ever grows:
/// the sandbox runs for at least `timeout` from now, longer if it already had longer.
async fn connect(state: &ServerState, raw: &str, timeout: u32) -> Result<Response, ApiError> {
    let id = visible(state, raw)?;
    let before = state.runtime.state(&id).await.map_err(provider(raw))?;
    let now = Utc::now();
    let current = state.registry.get_or_adopt(id.as_str(), None).end_at;
    let requested = now + secs(timeout);
    let end_at = match before {
        ProviderState::Running if current > requested => current,
        _ => requested,
    };
    let keep = (end_at - now).to_std().unwrap_or_default();
    state
        .runtime
        .connect(&id, keep)
        .await
        .map_err(provider(raw))?;
    let meta = state
        .registry
        .update(id.as_str(), |meta| meta.end_at = end_at);
    let status = match before {
        ProviderState::Paused => StatusCode::CREATED,
        ProviderState::Running => StatusCode::OK,
    };
    Ok((
        status,
        Json(Sandbox::new(id.as_str(), &meta, &state.domain)),
    )
        .into_response())
}

/// `POST /sandboxes/{id}/connect` (`ConnectSandbox`, timeout required).
#[tracing::instrument(skip_all, fields(sandbox_id = %raw))]
pub async fn connect_v1(
    State(state): State<ServerState>,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let timeout = parse_body::<TimeoutBody>(&body)?
        .and_then(|b| b.timeout)
        .ok_or_else(|| ApiError(SandboxError::Invalid("timeout is required".into())))?;
    connect(&state, &raw, timeout).await
}

/// `POST /v2/sandboxes/{id}/connect` (`ConnectSandboxV2`, timeout optional).
#[tracing::instrument(skip_all, fields(sandbox_id = %raw))]
pub async fn connect_v2(
    State(state): State<ServerState>,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let timeout = parse_body::<TimeoutBody>(&body)?
        .and_then(|b| b.timeout)
        .unwrap_or(V2_DEFAULT_TIMEOUT);
    connect(&state, &raw, timeout).await
}

/// `POST /sandboxes/{id}/timeout` → 204: the end becomes `timeout` from now, shorter or longer.
#[tracing::instrument(skip_all, fields(sandbox_id = %raw))]
pub async fn set_timeout(
    State(state): State<ServerState>,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let id = visible(&state, &raw)?;
    let timeout = parse_body::<TimeoutBody>(&body)?
        .and_then(|b| b.timeout)
        .ok_or_else(|| ApiError(SandboxError::Invalid("timeout is required".into())))?;
    state
        .runtime
        .set_timeout(&id, Duration::from_secs(timeout.into()))
        .await
        .map_err(provider(&raw))?;
    state
        .registry
        .update(id.as_str(), |m| m.end_at = Utc::now() + secs(timeout));
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
        state.registry.remove(id.as_str());
        state.processes.forget_sandbox(id.as_str());
    }
    result.map_err(provider(&raw))?;
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

    #[test]
    fn any_metadata_makes_a_runtime_spec() {
        let spec = spec_of(&BTreeMap::new(), 15, false).ok().unwrap();
        assert_eq!(spec.user_id.as_ref(), ANONYMOUS_USER);
        let job = JobId::new();
        let ours = BTreeMap::from([("job_id".to_owned(), job.to_string())]);
        assert_eq!(spec_of(&ours, 15, true).ok().unwrap().job_id, job);
    }
}
