//! The one place E2B's answers become [`SandboxError`] variants: by HTTP status, by Connect error code, or by
//! the kind of transport failure. Messages are carried along for humans, never inspected.

use domain::ports::{ProxyAnswer, SandboxError};
use serde::Deserialize;

use crate::proxy;
use crate::retry::{retry_of, Retry};

/// A failed call, with whether and when repeating it may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub error: SandboxError,
    pub retry: Retry,
}

impl Failure {
    pub fn fatal(error: SandboxError) -> Self {
        Self {
            error,
            retry: Retry::Never,
        }
    }
}

/// Maps an HTTP status of the platform API or envd.
pub fn from_status(status: u16, message: String) -> SandboxError {
    match status {
        404 => SandboxError::NotFound(message),
        409 => SandboxError::Conflict(message),
        401 | 403 => SandboxError::Unauthorized(message),
        408 | 504 => SandboxError::TimedOut(message),
        429 | 502 | 503 => SandboxError::Unavailable(message),
        400 => SandboxError::Invalid(message),
        _ => SandboxError::Provider(message),
    }
}

/// Maps a Connect error code (the `code` of an error body or an end-of-stream message).
pub fn from_connect_code(code: &str, message: String) -> SandboxError {
    match code {
        "not_found" => SandboxError::NotFound(message),
        "already_exists" | "aborted" | "failed_precondition" => SandboxError::Conflict(message),
        "unauthenticated" | "permission_denied" => SandboxError::Unauthorized(message),
        "deadline_exceeded" | "canceled" => SandboxError::TimedOut(message),
        "unavailable" | "resource_exhausted" => SandboxError::Unavailable(message),
        "invalid_argument" | "out_of_range" => SandboxError::Invalid(message),
        _ => SandboxError::Provider(message),
    }
}

/// Maps a transport failure: nothing answered, or it answered too late.
pub(crate) fn from_reqwest(err: &reqwest::Error) -> Failure {
    let message = error_chain(err);
    if err.is_timeout() {
        Failure::fatal(SandboxError::TimedOut(message))
    } else if err.is_connect() {
        // Nothing was sent: always safe to try again.
        Failure {
            error: SandboxError::Unavailable(message),
            retry: Retry::Backoff,
        }
    } else if err.is_decode() {
        Failure::fatal(SandboxError::Provider(message))
    } else {
        // A connection reset or a body cut short: the provider went away mid-answer.
        Failure::fatal(SandboxError::Unavailable(message))
    }
}

/// The error bodies we may get: the platform's `{code: int, message}`, envd's `{code: int, message}`, or a
/// Connect unary error `{code: "not_found", message}`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default)]
    message: Option<String>,
}

/// What an error answer carried besides its status.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Answer<'a> {
    pub content_type: Option<&'a str>,
    pub should_retry: Option<&'a str>,
    pub retry_after: Option<&'a str>,
}

/// Maps an HTTP error answer from its status, headers and body. The sandbox proxy's "sandbox not found"
/// (a paused or gone sandbox, in front of envd) is `NotFound` and never retried.
pub(crate) fn from_error_body(status: u16, answer: Answer<'_>, body: &[u8]) -> Failure {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|b| b.message.clone())
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                format!("HTTP {status}")
            } else {
                text.chars().take(500).collect()
            }
        });
    let message = format!("HTTP {status}: {message}");
    if let Some(serde_json::Value::String(code)) = parsed.and_then(|b| b.code) {
        // A Connect error: its code says what happened; envd's errors are not retried by status.
        let retry = if matches!(code.as_str(), "unavailable" | "resource_exhausted") {
            Retry::Backoff
        } else {
            Retry::Never
        };
        return Failure {
            retry,
            error: from_connect_code(&code, message),
        };
    }
    if proxy::classify(status, answer.content_type, body) == Some(ProxyAnswer::SandboxNotFound) {
        return Failure::fatal(SandboxError::NotFound(message));
    }
    Failure {
        retry: retry_of(status, answer.should_retry, answer.retry_after),
        error: from_status(status, message),
    }
}

/// Reads an error answer and maps it.
pub(crate) async fn from_response(resp: reqwest::Response) -> Failure {
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (content_type, should_retry, retry_after) = (
        header("content-type"),
        header("should-retry"),
        header("retry-after"),
    );
    let body = resp.bytes().await.unwrap_or_default();
    let answer = Answer {
        content_type: content_type.as_deref(),
        should_retry: should_retry.as_deref(),
        retry_after: retry_after.as_deref(),
    };
    from_error_body(status, answer, &body)
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A variant's constructor, to compare against.
    type Variant = fn(String) -> SandboxError;

    #[test]
    fn statuses_map_to_variants() {
        let cases: &[(u16, Variant)] = &[
            (404, SandboxError::NotFound),
            (409, SandboxError::Conflict),
            (401, SandboxError::Unauthorized),
            (403, SandboxError::Unauthorized),
            (408, SandboxError::TimedOut),
            (504, SandboxError::TimedOut),
            (429, SandboxError::Unavailable),
            (502, SandboxError::Unavailable),
            (503, SandboxError::Unavailable),
            (400, SandboxError::Invalid),
            (500, SandboxError::Provider),
            (418, SandboxError::Provider),
        ];
        for (status, variant) in cases {
            assert_eq!(
                from_status(*status, "m".into()),
                variant("m".into()),
                "{status}"
            );
        }
    }

    #[test]
    fn only_transient_answers_are_retried() {
        for status in [429, 502, 503, 504] {
            let failure = from_error_body(status, Answer::default(), b"{}");
            assert_eq!(failure.retry, Retry::Backoff, "{status}");
        }
        for status in [400, 401, 404, 409, 500] {
            let failure = from_error_body(status, Answer::default(), b"{}");
            assert_eq!(failure.retry, Retry::Never, "{status}");
        }
        let marked = Answer {
            should_retry: Some("false"),
            ..Answer::default()
        };
        assert_eq!(from_error_body(503, marked, b"").retry, Retry::Never);
        let later = Answer {
            retry_after: Some("4"),
            ..Answer::default()
        };
        assert_eq!(
            from_error_body(429, later, b"").retry,
            Retry::After(std::time::Duration::from_secs(4))
        );
    }

    #[test]
    fn the_proxys_sandbox_not_found_is_not_found_for_good() {
        let json = Answer {
            content_type: Some("application/json; charset=utf-8"),
            ..Answer::default()
        };
        let gone = from_error_body(
            502,
            json,
            br#"{"sandboxId":"abc","message":"The sandbox was not found","code":502}"#,
        );
        assert!(matches!(gone.error, SandboxError::NotFound(_)), "{gone:?}");
        assert_eq!(gone.retry, Retry::Never);
        let closed = from_error_body(
            502,
            json,
            br#"{"sandboxId":"abc","message":"The sandbox is running but port is not open","port":49983,"code":502}"#,
        );
        assert!(matches!(closed.error, SandboxError::Unavailable(_)));
        assert_eq!(closed.retry, Retry::Backoff);
    }

    #[test]
    fn connect_codes_map_to_variants() {
        let cases: &[(&str, Variant)] = &[
            ("not_found", SandboxError::NotFound),
            ("deadline_exceeded", SandboxError::TimedOut),
            ("unavailable", SandboxError::Unavailable),
            ("resource_exhausted", SandboxError::Unavailable),
            ("unauthenticated", SandboxError::Unauthorized),
            ("permission_denied", SandboxError::Unauthorized),
            ("invalid_argument", SandboxError::Invalid),
            ("already_exists", SandboxError::Conflict),
            ("failed_precondition", SandboxError::Conflict),
            ("internal", SandboxError::Provider),
            ("unknown", SandboxError::Provider),
        ];
        for (code, variant) in cases {
            assert_eq!(
                from_connect_code(code, "m".into()),
                variant("m".into()),
                "{code}"
            );
        }
    }

    #[test]
    fn error_bodies_prefer_a_connect_code_over_the_status() {
        let failure = from_error_body(
            200,
            Answer::default(),
            br#"{"code":"not_found","message":"no such process"}"#,
        );
        assert_eq!(
            failure.error,
            SandboxError::NotFound("HTTP 200: no such process".into())
        );
        let failure = from_error_body(503, Answer::default(), br#"{"code":503,"message":"busy"}"#);
        assert_eq!(failure.retry, Retry::Backoff);
        assert_eq!(
            failure.error,
            SandboxError::Unavailable("HTTP 503: busy".into())
        );
        let failure = from_error_body(502, Answer::default(), b"<html>bad gateway</html>");
        assert!(matches!(failure.error, SandboxError::Unavailable(_)));
    }
}
