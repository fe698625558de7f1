//! Recognising the answers E2B's sandbox proxy gives in a sandbox's place (`e2b-dev/infra`,
//! `packages/shared/pkg/proxy`), by their shape rather than their wording:
//!
//! - a sandbox it cannot reach: JSON `{"sandboxId", "message", "code"}` with `code` equal to the status —
//!   502 and no `port` when the sandbox is not found (gone, or paused), 502 with the `port` when the
//!   sandbox runs but nothing listens on it, 403/409/429 for tokens, transitions and connection limits;
//! - a request it cannot route: `http.Error` plain text, 400 `Invalid host`, `Invalid sandbox ID`,
//!   `Invalid sandbox port` or `missing header`;
//! - a reserved path: JSON `{"message", "path", "code": 404}`.
//!
//! A browser (by `User-Agent`) gets HTML pages instead; Slipway's clients never claim to be one.

use domain::ports::ProxyAnswer;
use serde::Deserialize;

/// The plain-text 400s of the proxy's router (`handler.go`), as `http.Error` writes them.
const ROUTING_ERRORS: &[&str] = &[
    "Invalid host",
    "Invalid sandbox ID",
    "Invalid sandbox port",
    "missing header",
];

/// The proxy's templated JSON errors (`template/*.go`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TemplatedError {
    #[serde(default)]
    sandbox_id: Option<String>,
    #[serde(default)]
    path: Option<String>,
    message: String,
    code: u16,
    #[serde(default)]
    port: Option<u64>,
}

/// The proxy's answer in `body` (status `status`, content type `content_type`), or `None` when the
/// answer is not one of the proxy's own (so it came from the app, or from envd).
pub fn classify(status: u16, content_type: Option<&str>, body: &[u8]) -> Option<ProxyAnswer> {
    let media = content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if media == "application/json" {
        let parsed: TemplatedError = serde_json::from_slice(body).ok()?;
        if parsed.code != status {
            return None;
        }
        return match (parsed.sandbox_id, parsed.path, parsed.port, status) {
            (Some(_), _, Some(_), 502) => Some(ProxyAnswer::PortNotOpen),
            (Some(_), _, None, 502) => Some(ProxyAnswer::SandboxNotFound),
            (Some(_), _, _, _) | (None, Some(_), _, 404) => {
                Some(ProxyAnswer::Other(parsed.message))
            }
            _ => None,
        };
    }
    if status == 400 && media == "text/plain" {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        if ROUTING_ERRORS.contains(&text) {
            return Some(ProxyAnswer::BadRoute(text.to_owned()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use domain::ports::ProbeResponse;
    use domain::usecases::preview::is_up;

    use super::*;

    const JSON: Option<&str> = Some("application/json; charset=utf-8");
    const TEXT: Option<&str> = Some("text/plain; charset=utf-8");

    /// The proxy's answers, byte for byte as `e2b-dev/infra` writes them, and what each is.
    fn proxy_answers() -> Vec<(u16, Option<&'static str>, &'static str, ProxyAnswer)> {
        vec![
            (
                502,
                JSON,
                r#"{"sandboxId":"i8d9x2k4","message":"The sandbox is running but port is not open","port":3000,"code":502}"#,
                ProxyAnswer::PortNotOpen,
            ),
            (
                502,
                JSON,
                r#"{"sandboxId":"i8d9x2k4","message":"The sandbox was not found","code":502}"#,
                ProxyAnswer::SandboxNotFound,
            ),
            (400, TEXT, "Invalid host\n", ProxyAnswer::BadRoute("Invalid host".into())),
            (
                400,
                TEXT,
                "Invalid sandbox ID\n",
                ProxyAnswer::BadRoute("Invalid sandbox ID".into()),
            ),
            (
                400,
                TEXT,
                "Invalid sandbox port\n",
                ProxyAnswer::BadRoute("Invalid sandbox port".into()),
            ),
            (400, TEXT, "missing header\n", ProxyAnswer::BadRoute("missing header".into())),
            (
                409,
                JSON,
                r#"{"sandboxId":"i8d9x2k4","message":"The sandbox is still transitioning. Try again in a moment.","code":409}"#,
                ProxyAnswer::Other("The sandbox is still transitioning. Try again in a moment.".into()),
            ),
            (
                429,
                JSON,
                r#"{"sandboxId":"i8d9x2k4","message":"The sandbox has too many concurrent incoming connections (limit: 100)","code":429,"connectionLimit":100}"#,
                ProxyAnswer::Other(
                    "The sandbox has too many concurrent incoming connections (limit: 100)".into(),
                ),
            ),
            (
                404,
                JSON,
                r#"{"message":"This endpoint is reserved for the E2B control plane and is not reachable through the sandbox URL","path":"/init","code":404}"#,
                ProxyAnswer::Other(
                    "This endpoint is reserved for the E2B control plane and is not reachable through the sandbox URL"
                        .into(),
                ),
            ),
        ]
    }

    #[test]
    fn each_proxy_answer_is_recognised_and_never_up() {
        for (status, content_type, body, expected) in proxy_answers() {
            let answer = classify(status, content_type, body.as_bytes());
            assert_eq!(answer.as_ref(), Some(&expected), "{status} {body}");
            let resp = ProbeResponse {
                proxy: answer,
                ..ProbeResponse::from_app(status, "https://3000-i8d9x2k4.e2b.app")
            };
            assert!(!is_up(&resp), "{status} {body} counted as up");
        }
    }

    #[test]
    fn the_apps_own_answers_are_not_the_proxys_and_up_below_500() {
        let apps: &[(u16, Option<&str>, &str, bool)] = &[
            (200, Some("text/html"), "<html>todo</html>", true),
            (404, TEXT, "Cannot GET /\n", true),
            (400, TEXT, "Bad Request\n", true),
            (400, JSON, r#"{"error":"Invalid host"}"#, true),
            // An app's JSON error that happens to carry a message and a code is still the app's.
            (
                400,
                JSON,
                r#"{"message":"Invalid host","code":"E_HOST"}"#,
                true,
            ),
            (
                403,
                TEXT,
                "Blocked request. This host is not allowed.\n",
                true,
            ),
            (502, Some("text/html"), "<html>Bad Gateway</html>", false),
            (500, JSON, r#"{"message":"boom","code":500}"#, false),
        ];
        for &(status, content_type, body, up) in apps {
            let answer = classify(status, content_type, body.as_bytes());
            assert_eq!(answer, None, "{status} {body}");
            let resp = ProbeResponse::from_app(status, "https://3000-i8d9x2k4.e2b.app");
            assert_eq!(is_up(&resp), up, "{status} {body}");
        }
    }
}
