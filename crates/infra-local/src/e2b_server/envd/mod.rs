//! envd, the agent inside every sandbox (`envd.yaml`, `process.proto`, `filesystem.proto`), over the local
//! runtime: `/health`, `/files`, and the Connect services `process.Process` ([`process`]) and
//! `filesystem.Filesystem` ([`filesystem`]) with the JSON codec.
//!
//! A secure sandbox's envd takes only calls carrying its access token in `X-Access-Token`, as E2B's envd
//! does (`internal/api/auth.go`): anything else answers 401 `{"code": 401, "message"}`, which a Connect
//! client reads as `unauthenticated`. `GET /health` is open; `/files` checks the token itself.

mod connect;
mod files;
mod filesystem;
mod paths;
mod process;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

pub use process::Processes;

use self::connect::{Code, ConnectError};
use super::wire::error_response;
use super::{EnvdTarget, ServerState};

/// The largest upload `/files` accepts.
const MAX_UPLOAD_BYTES: usize = 256 * 1024 * 1024;

/// envd's routes; every request carries its [`EnvdTarget`].
pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route(
            "/files",
            get(files::read)
                .post(files::write)
                .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
        )
        .route("/process.Process/Start", post(process::start))
        .route("/process.Process/SendSignal", post(process::send_signal))
        .route("/process.Process/List", post(process::list))
        .route("/filesystem.Filesystem/ListDir", post(filesystem::list_dir))
        .route("/filesystem.Filesystem/Stat", post(filesystem::stat))
        .route("/filesystem.Filesystem/MakeDir", post(filesystem::make_dir))
        .route("/filesystem.Filesystem/Remove", post(filesystem::remove))
        .fallback(unknown)
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

/// `GET /health` → 204.
async fn health() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// A Connect method this envd does not serve is `unimplemented`; any other path is a 404.
async fn unknown(req: Request) -> Response {
    let path = req.uri().path();
    if path.starts_with("/process.") || path.starts_with("/filesystem.") {
        return ConnectError::new(
            Code::Unimplemented,
            format!("{path} is not implemented by e2b-local"),
        )
        .into_response();
    }
    error_response(StatusCode::NOT_FOUND, &format!("{path} not found"))
}

/// The paths envd serves without its token (`authExcludedPaths`): `/files` checks it itself.
fn open_path(method: &Method, path: &str) -> bool {
    matches!(
        (method, path),
        (&Method::GET, "/health") | (&Method::GET, "/files") | (&Method::POST, "/files")
    )
}

async fn authorize(State(state): State<ServerState>, req: Request, next: Next) -> Response {
    if open_path(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let Some(target) = req.extensions().get::<EnvdTarget>() else {
        return error_response(StatusCode::BAD_REQUEST, "missing header");
    };
    let meta = state.registry.get_or_adopt(target.0.as_str(), None);
    if let Some(token) = meta.token {
        let given = req
            .headers()
            .get("x-access-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !token.matches(given) {
            tracing::warn!(sandbox_id = %target.0, "envd call without the sandbox's access token");
            return error_response(
                StatusCode::UNAUTHORIZED,
                "unauthorized access, please provide a valid access token or method signing if supported",
            );
        }
    }
    next.run(req).await
}
