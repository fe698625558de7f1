//! The Connect protocol with the JSON codec, as envd speaks it: unary calls are a JSON body in and out,
//! with errors as `{"code": "<code>", "message"}` under the code's HTTP status; server streams are
//! enveloped messages (a flags byte, a big-endian length, the JSON) ending with an end-of-stream envelope
//! that carries the error, if any, with HTTP 200.

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use domain::ports::SandboxError;
use serde_json::json;

/// The content type of a Connect stream with the JSON codec.
pub const STREAM_JSON: &str = "application/connect+json";
/// The content type of a unary Connect call with the JSON codec.
pub const UNARY_JSON: &str = "application/json";
const END_STREAM: u8 = 0x02;

/// The Connect error codes envd answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    FailedPrecondition,
    Unimplemented,
    Internal,
    Unavailable,
    Unauthenticated,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::FailedPrecondition => "failed_precondition",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    /// The HTTP status of a unary error with this code (the Connect protocol's table).
    pub fn http_status(self) -> StatusCode {
        match self {
            Code::InvalidArgument | Code::FailedPrecondition => StatusCode::BAD_REQUEST,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        }
    }
}

/// A Connect error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectError {
    pub code: Code,
    pub message: String,
}

impl ConnectError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn body(&self) -> serde_json::Value {
        json!({"code": self.code.as_str(), "message": self.message})
    }
}

impl From<SandboxError> for ConnectError {
    fn from(e: SandboxError) -> Self {
        let code = match &e {
            SandboxError::NotFound(_) => Code::NotFound,
            SandboxError::Conflict(_) => Code::FailedPrecondition,
            SandboxError::Unauthorized(_) => Code::Unauthenticated,
            SandboxError::Invalid(_) => Code::InvalidArgument,
            SandboxError::TimedOut(_) => Code::DeadlineExceeded,
            SandboxError::Unavailable(_) => Code::Unavailable,
            SandboxError::Provider(_) => Code::Internal,
        };
        Self::new(code, e.to_string())
    }
}

/// A unary call's error answer.
impl IntoResponse for ConnectError {
    fn into_response(self) -> Response {
        (
            self.code.http_status(),
            [(header::CONTENT_TYPE, UNARY_JSON)],
            self.body().to_string(),
        )
            .into_response()
    }
}

/// A unary call's success answer.
pub fn unary(message: serde_json::Value) -> Response {
    ([(header::CONTENT_TYPE, UNARY_JSON)], message.to_string()).into_response()
}

/// The request message of a unary call.
pub fn unary_request<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, ConnectError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    if content_type != Some(UNARY_JSON) {
        return Err(ConnectError::new(
            Code::Unimplemented,
            format!("only the JSON codec ({UNARY_JSON}) is served"),
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ConnectError::new(Code::InvalidArgument, format!("malformed request: {e}")))
}

/// The single request message of a server-streaming call.
pub fn stream_request<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, ConnectError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if content_type != Some(STREAM_JSON) {
        return Err(ConnectError::new(
            Code::Unimplemented,
            format!("only the JSON codec ({STREAM_JSON}) is served"),
        ));
    }
    let message = match body {
        [0, a, b, c, d, rest @ ..]
            if u32::from_be_bytes([*a, *b, *c, *d]) as usize == rest.len() =>
        {
            rest
        }
        _ => {
            return Err(ConnectError::new(
                Code::InvalidArgument,
                "the request is not one uncompressed envelope",
            ))
        }
    };
    serde_json::from_slice(message)
        .map_err(|e| ConnectError::new(Code::InvalidArgument, format!("malformed request: {e}")))
}

/// One message of a stream.
pub fn envelope(message: &serde_json::Value) -> Bytes {
    frame(0, message)
}

/// The end of a stream: `Ok` or its error.
pub fn end_stream(result: Result<(), ConnectError>) -> Bytes {
    match result {
        Ok(()) => frame(END_STREAM, &json!({})),
        Err(e) => frame(END_STREAM, &json!({"error": e.body()})),
    }
}

fn frame(flags: u8, message: &serde_json::Value) -> Bytes {
    let body = message.to_string().into_bytes();
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(flags);
    // A message over 4 GiB cannot be framed; output arrives line by line, far below that.
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_carry_big_endian_lengths() {
        assert_eq!(
            &end_stream(Ok(()))[..],
            &[END_STREAM, 0, 0, 0, 2, b'{', b'}']
        );
        let err = end_stream(Err(ConnectError::new(Code::NotFound, "gone")));
        let body: serde_json::Value = serde_json::from_slice(&err[5..]).unwrap();
        assert_eq!(
            body,
            json!({"error": {"code": "not_found", "message": "gone"}})
        );
    }

    #[test]
    fn unary_errors_use_the_codes_status() {
        let resp = ConnectError::new(Code::Unauthenticated, "no").into_response();
        assert_eq!(resp.status(), 401);
        assert_eq!(Code::NotFound.http_status(), 404);
        assert_eq!(Code::Unimplemented.http_status(), 501);
    }

    #[test]
    fn stream_requests_are_one_envelope_of_json() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, STREAM_JSON.parse().unwrap());
        let body = envelope(&json!({"a": 1}));
        let parsed: serde_json::Value = stream_request(&headers, &body).unwrap();
        assert_eq!(parsed, json!({"a": 1}));
        assert!(stream_request::<serde_json::Value>(&headers, b"{}").is_err());
        headers.insert(
            header::CONTENT_TYPE,
            "application/connect+proto".parse().unwrap(),
        );
        assert_eq!(
            stream_request::<serde_json::Value>(&headers, &body).map_err(|e| e.code),
            Err(Code::Unimplemented)
        );
    }
}
