//! Which sandbox port a request is for, and the answers E2B's sandbox proxy gives when it cannot deliver
//! one (`e2b-dev/infra`: `packages/shared/pkg/proxy/host.go`, `handler.go`, `template/*.go`).
//!
//! A request names a sandbox port either by its host, `{port}-{sandboxID}.{domain}`, or, on a local or
//! shared host (`localhost`, an IP address, `sandbox.{domain}`), by the `E2b-Sandbox-Id` and
//! `E2b-Sandbox-Port` headers. Anything else is for the platform API, which shares this server's port.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// envd's port inside every sandbox.
pub const ENVD_PORT: u16 = 49983;

/// A sandbox port a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxTarget {
    pub sandbox_id: String,
    pub port: u16,
}

/// Why the proxy refused to route a request: its plain-text 400s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MissingHeader,
    InvalidHost,
    InvalidSandboxId,
    InvalidSandboxPort,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let text = match self {
            Refusal::MissingHeader => "missing header",
            Refusal::InvalidHost => "Invalid host",
            Refusal::InvalidSandboxId => "Invalid sandbox ID",
            Refusal::InvalidSandboxPort => "Invalid sandbox port",
        };
        // As Go's http.Error writes it.
        (
            StatusCode::BAD_REQUEST,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            format!("{text}\n"),
        )
            .into_response()
    }
}

/// The host without its port.
fn hostname(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

fn valid_sandbox_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn parse_port(port: &str) -> Result<u16, Refusal> {
    port.parse().map_err(|_| Refusal::InvalidSandboxPort)
}

/// The sandbox port `headers` and `host` name, `Ok(None)` for a platform API request.
pub fn target(
    host: &str,
    headers: &HeaderMap,
    domain: &str,
) -> Result<Option<SandboxTarget>, Refusal> {
    let name = hostname(host);
    let domain_name = hostname(domain);
    let local = name == "localhost" || name.parse::<std::net::IpAddr>().is_ok();
    let shared = name == format!("sandbox.{domain_name}");
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
    };
    let (id, port) = (header("e2b-sandbox-id"), header("e2b-sandbox-port"));
    if (local || shared) && (id.is_some() || port.is_some()) {
        let (Some(id), Some(port)) = (id, port) else {
            return Err(Refusal::MissingHeader);
        };
        let port = parse_port(port)?;
        if !valid_sandbox_id(id) {
            return Err(Refusal::InvalidSandboxId);
        }
        return Ok(Some(SandboxTarget {
            sandbox_id: id.to_owned(),
            port,
        }));
    }
    // A host under our domain names its sandbox in its first label.
    let Some(label) = name
        .strip_suffix(domain_name)
        .and_then(|rest| rest.strip_suffix('.'))
        .filter(|label| !label.is_empty() && !shared)
    else {
        return Ok(None);
    };
    let first = label.split('.').next().unwrap_or(label);
    let mut parts = first.split('-');
    let (Some(port), Some(id)) = (parts.next(), parts.next()) else {
        return Err(Refusal::InvalidHost);
    };
    let port = parse_port(port)?;
    if !valid_sandbox_id(id) {
        return Err(Refusal::InvalidSandboxId);
    }
    Ok(Some(SandboxTarget {
        sandbox_id: id.to_owned(),
        port,
    }))
}

/// 502 `The sandbox was not found`: the proxy has no running sandbox of that id (gone, or paused).
pub fn sandbox_not_found(sandbox_id: &str) -> Response {
    (
        StatusCode::BAD_GATEWAY,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        json!({"sandboxId": sandbox_id, "message": "The sandbox was not found", "code": 502})
            .to_string(),
    )
        .into_response()
}

/// The header a private sandbox's traffic access token travels in.
pub const TRAFFIC_TOKEN_HEADER: &str = "e2b-traffic-access-token";

/// 403 for a request to a private sandbox's port without its traffic access token (`missing`) or with
/// another (`invalid`), as E2B's orchestrator proxy refuses it.
pub fn traffic_token_refused(sandbox_id: &str, missing: bool) -> Response {
    let message = if missing {
        "missing traffic access token"
    } else {
        "invalid traffic access token"
    };
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        json!({
            "sandboxId": sandbox_id,
            "message": message,
            "header": TRAFFIC_TOKEN_HEADER,
            "code": 403
        })
        .to_string(),
    )
        .into_response()
}

/// 502 `The sandbox is running but port is not open`.
pub fn port_not_open(sandbox_id: &str, port: u16) -> Response {
    (
        StatusCode::BAD_GATEWAY,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        json!({
            "sandboxId": sandbox_id,
            "message": "The sandbox is running but port is not open",
            "port": port,
            "code": 502
        })
        .to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const DOMAIN: &str = "localhost:41000";

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    fn sbx(id: &str, port: u16) -> Result<Option<SandboxTarget>, Refusal> {
        Ok(Some(SandboxTarget {
            sandbox_id: id.into(),
            port,
        }))
    }

    #[test]
    fn hosts_under_the_domain_name_their_sandbox() {
        let none = HeaderMap::new();
        assert_eq!(
            target("3000-abc1.localhost:41000", &none, DOMAIN),
            sbx("abc1", 3000)
        );
        assert_eq!(
            target("49983-abc1.localhost", &none, DOMAIN),
            sbx("abc1", 49983)
        );
        assert_eq!(
            target("abc1.localhost:41000", &none, DOMAIN),
            Err(Refusal::InvalidHost)
        );
        assert_eq!(
            target("web-abc1.localhost:41000", &none, DOMAIN),
            Err(Refusal::InvalidSandboxPort)
        );
        assert_eq!(
            target("3000-ABC_1.localhost:41000", &none, DOMAIN),
            Err(Refusal::InvalidSandboxId)
        );
    }

    #[test]
    fn local_hosts_route_by_headers_or_reach_the_platform() {
        let routed = headers(&[("e2b-sandbox-id", "abc1"), ("e2b-sandbox-port", "49983")]);
        assert_eq!(
            target("127.0.0.1:41000", &routed, DOMAIN),
            sbx("abc1", 49983)
        );
        assert_eq!(
            target("localhost:41000", &routed, DOMAIN),
            sbx("abc1", 49983)
        );
        assert_eq!(
            target("sandbox.localhost:41000", &routed, DOMAIN),
            sbx("abc1", 49983)
        );
        assert_eq!(
            target("127.0.0.1:41000", &HeaderMap::new(), DOMAIN),
            Ok(None)
        );
        assert_eq!(
            target("localhost:41000", &HeaderMap::new(), DOMAIN),
            Ok(None)
        );
        let half = headers(&[("e2b-sandbox-id", "abc1")]);
        assert_eq!(
            target("127.0.0.1:41000", &half, DOMAIN),
            Err(Refusal::MissingHeader)
        );
        let bad_port = headers(&[("e2b-sandbox-id", "abc1"), ("e2b-sandbox-port", "x")]);
        assert_eq!(
            target("127.0.0.1:41000", &bad_port, DOMAIN),
            Err(Refusal::InvalidSandboxPort)
        );
        let bad_id = headers(&[("e2b-sandbox-id", "../x"), ("e2b-sandbox-port", "1")]);
        assert_eq!(
            target("127.0.0.1:41000", &bad_id, DOMAIN),
            Err(Refusal::InvalidSandboxId)
        );
    }

    #[tokio::test]
    async fn refusals_and_proxy_answers_are_e2bs() {
        let refused = Refusal::InvalidHost.into_response();
        assert_eq!(refused.status(), 400);
        let body = axum::body::to_bytes(refused.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(&body[..], b"Invalid host\n");
        let closed = port_not_open("abc1", 3000);
        assert_eq!(closed.status(), 502);
        let body = axum::body::to_bytes(closed.into_body(), 1024)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            json!({"sandboxId":"abc1","message":"The sandbox is running but port is not open","port":3000,"code":502})
        );
    }
}
