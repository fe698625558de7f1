//! An E2B-compatible server over any [`SandboxRuntime`] (in practice [`crate::LocalRuntime`]), so the
//! production E2B client runs end to end without the internet.
//!
//! It serves the subset of `shared/specs/e2b/` that `infra-e2b` uses, with the spec's paths, status codes and
//! payloads: the platform API (`POST /sandboxes`, `GET /sandboxes/{id}`, `GET /v2/sandboxes`,
//! `POST /sandboxes/{id}/pause|connect|timeout`, `DELETE /sandboxes/{id}`, all behind `X-API-Key`) and envd
//! (`POST /process.Process/Start` as a Connect server stream with the JSON codec, `POST`/`GET /files`),
//! where envd requests name their sandbox with the `E2b-Sandbox-Id` header, as the SDKs do against a shared
//! sandbox host, or with a `{port}-{sandboxID}.…` host name.
//!
//! Local-only extensions, outside the E2B API:
//! - `GET|POST /_faults`: read or replace the [`FaultConfig`] (behind `X-API-Key`).
//! - `/preview/{sandboxID}/{port}/…`: a reverse proxy to the sandbox port's preview, the URL `infra-e2b`
//!   hands out when its `sandbox_url` points here. It answers 502 when the sandbox is paused or gone, as
//!   E2B's proxy does for a sandbox it cannot reach. Apps must use relative asset URLs behind this prefix.
//!
//! A foreground command is one whose Start request carries `Connect-Timeout-Ms` (the client's per-command
//! deadline); without a deadline the command is started in the background and the stream ends after its
//! start event, while the process lives on in the runtime.

mod control;
mod envd;
mod faults;
mod preview;
mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use domain::ports::{SandboxError, SandboxRuntime};

pub use faults::{FaultConfig, FaultConfigError};

/// The largest upload `/files` accepts.
const MAX_UPLOAD_BYTES: usize = 256 * 1024 * 1024;

/// Shared by every handler.
#[derive(Clone)]
pub(crate) struct ServerState {
    pub runtime: Arc<dyn SandboxRuntime>,
    api_key: Arc<str>,
    faults: Arc<RwLock<FaultConfig>>,
    /// What the platform API knows about a sandbox and the runtime does not (metadata, envd token, times).
    pub registry: Arc<Mutex<HashMap<String, wire::SandboxMeta>>>,
    /// Forwards preview requests; follows no redirects (the browser does).
    pub proxy: reqwest::Client,
}

impl ServerState {
    pub fn faults(&self) -> FaultConfig {
        self.faults.read().map(|f| f.clone()).unwrap_or_default()
    }

    /// `NotFound` when the fault configuration hides this sandbox.
    pub fn check_visible(&self, id: &str) -> Result<(), SandboxError> {
        if self.faults().hides(id) {
            return Err(SandboxError::NotFound(format!(
                "sandbox {id} not found (injected)"
            )));
        }
        Ok(())
    }

    pub fn meta(&self, id: &str) -> Option<wire::SandboxMeta> {
        self.registry.lock().ok().and_then(|r| r.get(id).cloned())
    }

    pub fn update_meta(&self, id: &str, f: impl FnOnce(&mut wire::SandboxMeta)) {
        if let Ok(mut registry) = self.registry.lock() {
            if let Some(meta) = registry.get_mut(id) {
                f(meta);
            }
        }
    }
}

/// The E2B-compatible router. `api_key` is the only `X-API-Key` accepted; `faults` are active from the start.
pub fn router(runtime: Arc<dyn SandboxRuntime>, api_key: &str, faults: FaultConfig) -> Router {
    let state = ServerState {
        runtime,
        api_key: Arc::from(api_key),
        faults: Arc::new(RwLock::new(faults)),
        registry: Arc::default(),
        proxy: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default(),
    };
    let platform = Router::new()
        .route("/sandboxes", post(control::create))
        .route("/v2/sandboxes", get(control::list))
        .route(
            "/sandboxes/{id}",
            get(control::detail).delete(control::kill),
        )
        .route("/sandboxes/{id}/pause", post(control::pause))
        .route("/sandboxes/{id}/connect", post(control::connect))
        .route("/sandboxes/{id}/timeout", post(control::set_timeout))
        .route("/_faults", get(get_faults).post(set_faults))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ));
    let envd = Router::new()
        .route("/process.Process/Start", post(envd::start))
        .route(
            "/files",
            get(envd::read_file)
                .post(envd::write_files)
                .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
        );
    let preview = Router::new()
        .route("/preview/{id}/{port}", any(preview::redirect_to_slash))
        .route("/preview/{id}/{port}/", any(preview::proxy_root))
        .route("/preview/{id}/{port}/{*rest}", any(preview::proxy));
    Router::new()
        .merge(platform)
        .merge(envd)
        .merge(preview)
        .layer(middleware::from_fn_with_state(state.clone(), add_latency))
        .with_state(state)
}

async fn require_api_key(State(state): State<ServerState>, req: Request, next: Next) -> Response {
    let given = req.headers().get("x-api-key").and_then(|v| v.to_str().ok());
    if given != Some(&*state.api_key) {
        return wire::error_response(StatusCode::UNAUTHORIZED, "Invalid API key");
    }
    next.run(req).await
}

async fn add_latency(State(state): State<ServerState>, req: Request, next: Next) -> Response {
    let latency = state.faults().latency_ms;
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    next.run(req).await
}

async fn get_faults(State(state): State<ServerState>) -> Json<FaultConfig> {
    Json(state.faults())
}

async fn set_faults(State(state): State<ServerState>, Json(faults): Json<FaultConfig>) -> Response {
    if let Err(e) = faults.validate() {
        return wire::error_response(StatusCode::BAD_REQUEST, &e.to_string());
    }
    tracing::info!(?faults, "fault configuration replaced");
    if let Ok(mut current) = state.faults.write() {
        *current = faults.clone();
    }
    Json(faults).into_response()
}
