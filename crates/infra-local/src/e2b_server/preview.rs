//! `/preview/{sandboxID}/{port}/…` (a local-only extension): a reverse proxy to a sandbox port's preview, as
//! E2B's `{port}-{sandboxID}.{domain}` hosts are. A paused or missing sandbox answers 502.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderName, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use domain::ports::{ProviderState, SandboxError};
use domain::SandboxId;

use super::wire;
use super::ServerState;

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1), plus the ones we recompute.
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
];

fn hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

fn bad_gateway(message: &str) -> Response {
    wire::error_response(StatusCode::BAD_GATEWAY, message)
}

/// `/preview/{id}/{port}` → the same with a trailing slash, so relative URLs resolve under the prefix.
pub async fn redirect_to_slash(Path((id, port)): Path<(String, u16)>) -> Redirect {
    Redirect::permanent(&format!("/preview/{id}/{port}/"))
}

pub async fn proxy_root(
    State(state): State<ServerState>,
    Path((id, port)): Path<(String, u16)>,
    req: Request,
) -> Response {
    forward(state, id, port, String::new(), req).await
}

pub async fn proxy(
    State(state): State<ServerState>,
    Path((id, port, rest)): Path<(String, u16, String)>,
    req: Request,
) -> Response {
    forward(state, id, port, rest, req).await
}

/// Where the runtime serves this sandbox port, if the sandbox is running.
async fn upstream(state: &ServerState, raw: &str, port: u16) -> Result<String, Response> {
    let gone = || bad_gateway(&format!("The sandbox {raw} was not found"));
    if state.check_visible(raw).is_err() {
        return Err(gone());
    }
    let id = SandboxId::try_from(raw).map_err(|_| gone())?;
    match state.runtime.state(&id).await {
        Ok(ProviderState::Running) => {}
        Ok(ProviderState::Paused) => {
            return Err(bad_gateway(&format!("The sandbox {raw} is paused")))
        }
        Err(SandboxError::NotFound(_)) => return Err(gone()),
        Err(e) => return Err(wire::ApiError(e).into_response()),
    }
    state
        .runtime
        .preview_url(&id, port)
        .await
        .map_err(|e| wire::ApiError(e).into_response())
}

#[tracing::instrument(skip_all, fields(sandbox_id = %raw, port))]
async fn forward(
    state: ServerState,
    raw: String,
    port: u16,
    rest: String,
    req: Request,
) -> Response {
    let base = match upstream(&state, &raw, port).await {
        Ok(base) => base,
        Err(answer) => return answer,
    };
    let mut url = format!("{}/{rest}", base.trim_end_matches('/'));
    if let Some(query) = req.uri().query() {
        url.push('?');
        url.push_str(query);
    }
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
            tracing::debug!(error = %e, "preview upstream did not answer");
            return bad_gateway(&format!(
                "The sandbox {raw} is running but port {port} is not open"
            ));
        }
    };
    let prefix = format!("/preview/{raw}/{port}/");
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if hop_by_hop(name) {
            continue;
        }
        // Keep redirects to the sandbox's own address behind the proxy.
        if name == header::LOCATION {
            if let Some(path) = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix(base.trim_end_matches('/')))
            {
                let local = format!("{}{}", prefix.trim_end_matches('/'), path);
                response = response.header(name, local);
                continue;
            }
        }
        response = response.header(name, value);
    }
    response
        .body(Body::from_stream(answer.bytes_stream()))
        .unwrap_or_else(|_| bad_gateway("cannot relay the preview's answer"))
}
