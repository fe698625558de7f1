//! The platform API's payloads (`openapi.yml` schemas, and the v2 create and connect bodies the current
//! SDKs send) and its error answers.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, SecondsFormat, Utc};
use domain::ports::{ProviderState, SandboxError};
use serde::{Deserialize, Serialize};

use super::registry::SandboxMeta;

/// The envd version this server claims to run: one that knows the default user and stdin flags, and
/// uploads by multipart (octet-stream uploads came with 0.5.7).
pub const ENVD_VERSION: &str = "0.5.0";
/// `NewSandbox.timeout`'s default in the spec.
pub const V1_DEFAULT_TIMEOUT: u32 = 15;
/// The v2 create and connect default (the SDKs' default sandbox timeout).
pub const V2_DEFAULT_TIMEOUT: u32 = 300;

/// `NewSandbox` (v1) and `NewSandboxV2`: the fields this server uses. A v2 sandbox is always secure.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(default)]
    pub timeout: Option<u32>,
    #[serde(default)]
    pub auto_pause: Option<bool>,
    #[serde(default)]
    pub secure: Option<bool>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub network: Option<NetworkConfig>,
}

/// `SandboxNetworkConfig`: the field this server uses.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkConfig {
    /// `false`: the sandbox's ports answer only requests carrying its traffic access token.
    #[serde(default)]
    pub allow_public_traffic: Option<bool>,
}

/// `ConnectSandbox` (v1, timeout required), `ConnectSandboxV2` (optional) and `SandboxTimeoutRequest`.
#[derive(Debug, Deserialize)]
pub struct TimeoutBody {
    #[serde(default)]
    pub timeout: Option<u32>,
}

/// `Sandbox`: the answer to create and connect.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: &'static str,
    pub envd_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envd_access_token: Option<String>,
    pub traffic_access_token: Option<String>,
    pub domain: Option<String>,
}

impl Sandbox {
    pub fn new(id: &str, meta: &SandboxMeta, domain: &str) -> Self {
        Self {
            template_id: meta.template_id.clone(),
            sandbox_id: id.to_owned(),
            client_id: "local",
            envd_version: ENVD_VERSION,
            envd_access_token: meta.token.as_ref().map(|t| t.expose().to_owned()),
            traffic_access_token: meta.traffic.as_ref().map(|t| t.expose().to_owned()),
            domain: Some(domain.to_owned()),
        }
    }
}

/// `SandboxLifecycle`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Lifecycle {
    pub auto_resume: bool,
    pub on_timeout: &'static str,
}

/// `SandboxDetail` (with the token, domain and lifecycle) and `ListedSandbox` (without them).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxDetail {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: &'static str,
    pub started_at: String,
    pub end_at: String,
    pub cpu_count: u32,
    #[serde(rename = "memoryMB")]
    pub memory_mb: u32,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: u32,
    pub state: &'static str,
    pub envd_version: &'static str,
    pub metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envd_access_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
    /// For sorting and filtering only.
    #[serde(skip)]
    pub started: DateTime<Utc>,
}

impl SandboxDetail {
    fn base(id: &str, meta: &SandboxMeta, state: ProviderState) -> Self {
        Self {
            template_id: meta.template_id.clone(),
            sandbox_id: id.to_owned(),
            client_id: "local",
            started_at: meta.started_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            end_at: meta.end_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            cpu_count: 1,
            memory_mb: 512,
            disk_size_mb: 1024,
            state: state_label(state),
            envd_version: ENVD_VERSION,
            metadata: meta.metadata.clone(),
            envd_access_token: None,
            domain: None,
            lifecycle: None,
            started: meta.started_at,
        }
    }

    /// `GET /sandboxes/{id}`: everything, the token included.
    pub fn detail(id: &str, meta: &SandboxMeta, state: ProviderState, domain: &str) -> Self {
        Self {
            envd_access_token: meta.token.as_ref().map(|t| t.expose().to_owned()),
            domain: Some(domain.to_owned()),
            lifecycle: Some(Lifecycle {
                auto_resume: false,
                on_timeout: if meta.auto_pause { "pause" } else { "kill" },
            }),
            ..Self::base(id, meta, state)
        }
    }

    /// One entry of `GET /v2/sandboxes`.
    pub fn listed(id: &str, meta: &SandboxMeta, state: ProviderState) -> Self {
        Self::base(id, meta, state)
    }
}

/// `SandboxState`.
pub fn state_label(state: ProviderState) -> &'static str {
    match state {
        ProviderState::Running => "running",
        ProviderState::Paused => "paused",
    }
}

/// `Error` (platform) and envd's `Error`: `{code, message}`.
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    code: u16,
    message: &'a str,
}

pub fn error_response(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(ErrorBody {
            code: status.as_u16(),
            message,
        }),
    )
        .into_response()
}

/// The platform's 404, worded as E2B's (`utils.SandboxNotFoundMsg`).
pub fn not_found(id: &str) -> SandboxError {
    SandboxError::NotFound(format!(
        "Sandbox {id:?} doesn't exist or you don't have access to it"
    ))
}

/// The status a runtime error is answered with (the inverse of the client's mapping).
pub fn status_of(err: &SandboxError) -> StatusCode {
    match err {
        SandboxError::NotFound(_) => StatusCode::NOT_FOUND,
        SandboxError::Conflict(_) => StatusCode::CONFLICT,
        SandboxError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        SandboxError::Invalid(_) => StatusCode::BAD_REQUEST,
        SandboxError::TimedOut(_) => StatusCode::GATEWAY_TIMEOUT,
        SandboxError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        SandboxError::Provider(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A runtime error as an HTTP answer; server-side failures are logged once here.
pub struct ApiError(pub SandboxError);

impl From<SandboxError> for ApiError {
    fn from(e: SandboxError) -> Self {
        Self(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(&self.0);
        if status.is_server_error() {
            tracing::error!(error = %self.0, "e2b server request failed");
        }
        let message = match &self.0 {
            SandboxError::NotFound(m)
            | SandboxError::Conflict(m)
            | SandboxError::Unauthorized(m)
            | SandboxError::Invalid(m)
            | SandboxError::TimedOut(m)
            | SandboxError::Unavailable(m)
            | SandboxError::Provider(m) => m.as_str(),
        };
        error_response(status, message)
    }
}
