//! The one error type of the HTTP layer, and the extractors that turn bad input into it.
//!
//! Every error answers `{"detail": <string or object>, "debug_id": "<uuid>"}`. A 5xx body is generic; its
//! cause is logged once, with the same debug_id, inside the request's span (which carries the request id).

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use uuid::Uuid;

use domain::{JobId, ProjectId};

use crate::serve::body_deadline::BodyExpired;

/// Everything a handler can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: the token is missing, malformed, expired or badly signed (the message says which).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// 404 with this detail (`Job not found`, `Project not found`, …).
    #[error("{0}")]
    NotFound(&'static str),
    /// 409: the request conflicts with the resource's state.
    #[error("conflict: {0}")]
    Conflict(String),
    /// 422: a field is missing, empty, too long or of the wrong form (the message names it).
    #[error("validation failed: {0}")]
    Validation(String),
    /// Any other 4xx from an extractor (malformed JSON 400, body too large 413, wrong content type 415).
    #[error("bad request ({status}): {message}")]
    BadRequest { status: StatusCode, message: String },
    /// 503 with a detail the client is meant to read (`System busy. Try again in N minutes.`).
    #[error("unavailable: {0}")]
    Busy(String),
    /// A status with a structured detail (the resume route's `{message, error_type}`).
    #[error("{status}: {detail}")]
    Detail { status: StatusCode, detail: Value },
    /// 503: a dependency (Postgres, Redis, the sandbox provider) failed; the cause is logged, not shown.
    #[error("dependency unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// 500: a bug; the cause is logged, not shown.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn job_not_found() -> Self {
        ApiError::NotFound("Job not found")
    }

    pub fn project_not_found() -> Self {
        ApiError::NotFound("Project not found")
    }

    pub fn unavailable(e: impl Into<anyhow::Error>) -> Self {
        ApiError::Unavailable(e.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest { status, .. } | ApiError::Detail { status, .. } => *status,
            ApiError::Busy(_) | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn detail(&self) -> Value {
        match self {
            ApiError::Unauthorized(m)
            | ApiError::Conflict(m)
            | ApiError::Validation(m)
            | ApiError::Busy(m)
            | ApiError::BadRequest { message: m, .. } => Value::String(m.clone()),
            ApiError::NotFound(m) => Value::String((*m).to_owned()),
            ApiError::Detail { detail, .. } => detail.clone(),
            ApiError::Unavailable(_) => "Service temporarily unavailable".into(),
            ApiError::Internal(_) => "Internal server error".into(),
        }
    }
}

/// Attached to every error response: the id the client sees and, for a 5xx, the cause. The request log
/// layer ([`crate::request_log`]) writes it once, next to the request id.
#[derive(Debug, Clone)]
pub struct ErrorReport {
    pub debug_id: Uuid,
    /// The cause chain of a 5xx (never shown to the client).
    pub cause: Option<String>,
}

/// An error response: `{detail, debug_id}` with the report attached.
pub fn error_response(status: StatusCode, detail: Value, cause: Option<String>) -> Response {
    let debug_id = Uuid::new_v4();
    let mut response = (
        status,
        axum::Json(json!({ "detail": detail, "debug_id": debug_id })),
    )
        .into_response();
    response
        .extensions_mut()
        .insert(ErrorReport { debug_id, cause });
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let cause = match &self {
            ApiError::Unavailable(cause) | ApiError::Internal(cause) => Some(format!("{cause:#}")),
            other if status.is_server_error() => Some(other.to_string()),
            _ => None,
        };
        error_response(status, self.detail(), cause)
    }
}

/// `axum::Json` whose rejections answer in the `{detail, debug_id}` shape: 422 for a missing field, a wrong
/// type or an unknown field (the message names it), 400 for malformed JSON, 413 past the body limit, 408
/// for a body that missed its deadline (`serve::body_deadline`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let expired = req.extensions().get::<BodyExpired>().cloned();
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(_) if expired.is_some_and(|e| e.is_expired()) => Err(ApiError::BadRequest {
                status: StatusCode::REQUEST_TIMEOUT,
                message: "Request body not received in time".into(),
            }),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let status = rejection.status();
    match rejection {
        JsonRejection::JsonDataError(e) => ApiError::Validation(strip_prefix(&e.body_text())),
        JsonRejection::JsonSyntaxError(e) => ApiError::BadRequest {
            status: StatusCode::BAD_REQUEST,
            message: format!("Malformed JSON: {}", strip_prefix(&e.body_text())),
        },
        JsonRejection::MissingJsonContentType(_) => ApiError::BadRequest {
            status,
            message: "Expected a JSON body with Content-Type: application/json".into(),
        },
        other if status == StatusCode::PAYLOAD_TOO_LARGE => ApiError::BadRequest {
            status,
            message: format!("Request body is too large: {}", other.body_text()),
        },
        other => ApiError::BadRequest {
            status: if status.is_client_error() {
                status
            } else {
                StatusCode::BAD_REQUEST
            },
            message: other.body_text(),
        },
    }
}

/// axum prefixes serde's message with a sentence about the target type; the client wants serde's part.
fn strip_prefix(text: &str) -> String {
    for prefix in [
        "Failed to deserialize the JSON body into the target type: ",
        "Failed to parse the request body as JSON: ",
    ] {
        if let Some(rest) = text.strip_prefix(prefix) {
            return rest.to_owned();
        }
    }
    text.to_owned()
}

/// The `{job_id}` path segment, parsed: a value that is not a UUID names no job, so it is `Job not found`
/// like any unknown id (the front end treats a 404 as "no such job"; a 422 would be a different answer for
/// the same fact).
#[derive(Debug, Clone, Copy)]
pub struct JobIdPath(pub JobId);

impl<S: Send + Sync> FromRequestParts<S> for JobIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw = path_segment(parts, state).await?;
        JobId::parse(&raw)
            .map(Self)
            .map_err(|_| ApiError::job_not_found())
    }
}

/// The `{project_id}` path segment, parsed: a value that is not a UUID is `Project not found`.
#[derive(Debug, Clone, Copy)]
pub struct ProjectIdPath(pub ProjectId);

impl<S: Send + Sync> FromRequestParts<S> for ProjectIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw = path_segment(parts, state).await?;
        ProjectId::parse(&raw)
            .map(Self)
            .map_err(|_| ApiError::project_not_found())
    }
}

async fn path_segment<S: Send + Sync>(parts: &mut Parts, state: &S) -> Result<String, ApiError> {
    let axum::extract::Path(raw) = axum::extract::Path::<String>::from_request_parts(parts, state)
        .await
        .map_err(|e: PathRejection| ApiError::Validation(e.body_text()))?;
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_hide_their_cause() {
        let e = ApiError::Internal(anyhow::anyhow!("password=hunter2"));
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.detail(), Value::String("Internal server error".into()));
    }

    #[test]
    fn not_found_detail_is_exact() {
        assert_eq!(
            ApiError::job_not_found().detail(),
            Value::String("Job not found".into())
        );
    }
}
