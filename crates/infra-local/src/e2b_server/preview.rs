//! A sandbox port other than envd's: a reverse proxy to what listens there, as E2B's
//! `{port}-{sandboxID}.{domain}` hosts are. Nothing listening is the proxy's 502 `port is not open`.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderName};
use axum::response::{IntoResponse, Response};
use domain::ports::SandboxRuntime;
use domain::SandboxId;

use super::routing;
use super::wire::ApiError;
use super::ServerState;

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1), plus the ones we recompute, and the
/// routing headers that were for this proxy.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "host",
    "content-length",
    "e2b-sandbox-id",
    "e2b-sandbox-port",
];

fn hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

/// Forwards `req` to `port` of the running sandbox `id`; `host` is the one the client used, kept in
/// redirects to the app's own address.
#[tracing::instrument(skip_all, fields(sandbox_id = %id, port))]
pub async fn forward(
    state: &ServerState,
    id: &SandboxId,
    port: u16,
    host: &str,
    req: Request,
) -> Response {
    let base = match state.runtime.preview_url(id, port).await {
        Ok(base) => base,
        Err(e) => return ApiError(e).into_response(),
    };
    let base = base.trim_end_matches('/').to_owned();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let url = format!("{base}{path_and_query}");
    let (parts, body) = req.into_parts();
    let mut outgoing = state.proxy.request(parts.method, &url);
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            outgoing = outgoing.header(name, value);
        }
    }
    let body = reqwest::Body::wrap_stream(body.into_data_stream());
    let answer = match outgoing.body(body).send().await {
        Ok(answer) => answer,
        Err(e) => {
            tracing::debug!(error = %e, "nothing answered on the sandbox port");
            return routing::port_not_open(id.as_str(), port);
        }
    };
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if hop_by_hop(name) {
            continue;
        }
        // A redirect to the app's own address stays behind the proxy.
        if name == header::LOCATION {
            if let Some(path) = value.to_str().ok().and_then(|v| v.strip_prefix(&base)) {
                let scheme = if host.is_empty() { "" } else { "http://" };
                response = response.header(name, format!("{scheme}{host}{path}"));
                continue;
            }
        }
        response = response.header(name, value);
    }
    response
        .body(Body::from_stream(answer.bytes_stream()))
        .unwrap_or_else(|_| routing::port_not_open(id.as_str(), port))
}
