//! The platform API's payloads (`openapi.yml` schemas), the server's per-sandbox record, and error answers.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, SecondsFormat, Utc};
use domain::ports::{ProviderState, SandboxError};
use serde::{Deserialize, Serialize};

/// The envd version this server claims to run.
pub const ENVD_VERSION: &str = "0.5.0";
/// The template reported for sandboxes created before a restart of the server.
const UNKNOWN_TEMPLATE: &str = "local";

/// What the platform API knows about a sandbox beyond the runtime's view.
#[derive(Debug, Clone)]
pub struct SandboxMeta {
    pub template_id: String,
    pub metadata: BTreeMap<String, String>,
    pub started_at: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
    /// `None` for sandboxes this process did not create (after a restart): any token is accepted.
    pub envd_access_token: Option<String>,
}

impl SandboxMeta {
    /// A record for a sandbox the runtime has but this server did not create.
    pub fn adopted(job_id: Option<String>) -> Self {
        let mut metadata = BTreeMap::from([("slipway".to_owned(), "1".to_owned())]);
        if let Some(job_id) = job_id {
            metadata.insert("job_id".to_owned(), job_id);
        }
        let now = Utc::now();
        Self {
            template_id: UNKNOWN_TEMPLATE.to_owned(),
            metadata,
            started_at: now,
            end_at: now,
            envd_access_token: None,
        }
    }
}

/// `NewSandbox`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(default = "default_timeout")]
    pub timeout: u32,
    #[serde(default)]
    pub auto_pause: bool,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

fn default_timeout() -> u32 {
    15
}

/// `ConnectSandbox` and `SandboxTimeoutRequest`.
#[derive(Debug, Deserialize)]
pub struct TimeoutBody {
    pub timeout: u32,
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
}

impl Sandbox {
    pub fn new(id: &str, meta: &SandboxMeta) -> Self {
        Self {
            template_id: meta.template_id.clone(),
            sandbox_id: id.to_owned(),
            client_id: "local",
            envd_version: ENVD_VERSION,
            envd_access_token: meta.envd_access_token.clone(),
        }
    }
}

/// `SandboxDetail` (and, without the token, `ListedSandbox`).
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
}

impl SandboxDetail {
    pub fn new(id: &str, meta: &SandboxMeta, state: ProviderState, with_token: bool) -> Self {
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
            envd_access_token: if with_token {
                meta.envd_access_token.clone()
            } else {
                None
            },
        }
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
        error_response(status, &self.0.to_string())
    }
}
