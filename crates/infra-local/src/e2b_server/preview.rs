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
    "e2b-traffic-access-token",
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
    let websocket = is_websocket(req.headers());
    let (mut parts, body) = req.into_parts();
    let client_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let mut outgoing = state.proxy.request(parts.method, &url);
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            outgoing = outgoing.header(name, value);
        }
    }
    if websocket {
        // The one hop-by-hop exchange a proxy must pass on: the WebSocket handshake (RFC 6455 §4.1).
        outgoing = outgoing
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket");
    }
    let body = reqwest::Body::wrap_stream(body.into_data_stream());
    let answer = match outgoing.body(body).send().await {
        Ok(answer) => answer,
        Err(e) => {
            tracing::debug!(error = %e, "nothing answered on the sandbox port");
            return routing::port_not_open(id.as_str(), port);
        }
    };
    if websocket && answer.status() == axum::http::StatusCode::SWITCHING_PROTOCOLS {
        return switch_protocols(answer, client_upgrade);
    }
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

fn is_websocket(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Answers the client's handshake with the app's 101 and joins the two upgraded connections.
fn switch_protocols(
    answer: reqwest::Response,
    client: Option<hyper::upgrade::OnUpgrade>,
) -> Response {
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        response = response.header(name, value);
    }
    tokio::spawn(async move {
        let (Some(client), Ok(upstream)) = (client, answer.upgrade().await) else {
            tracing::debug!("websocket upgrade did not complete");
            return;
        };
        let Ok(client) = client.await else {
            tracing::debug!("the client's websocket upgrade did not complete");
            return;
        };
        let mut client = hyper_util::rt::TokioIo::new(client);
        let mut upstream = upstream;
        if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(error = %error, "websocket connection ended");
        }
    });
    response
        .body(Body::empty())
        .unwrap_or_else(|_| Response::new(Body::empty()))
}
