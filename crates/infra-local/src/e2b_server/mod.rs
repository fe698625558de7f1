//! `e2b-local`: an E2B-compatible server over [`LocalRuntime`] sandboxes, faithful enough that the official
//! SDK drives its whole lifecycle against it and that the production E2B client meets E2B's behaviour
//! without the internet. Where this server and `shared/specs/e2b/` disagree, the spec is right.
//!
//! One port serves three things, told apart as E2B's sandbox proxy does ([`routing`]):
//!
//! - **Sandbox ports**, named by the host `{port}-{sandboxID}.{domain}` or, on `localhost`, an IP address
//!   or `sandbox.{domain}`, by the `E2b-Sandbox-Id`/`E2b-Sandbox-Port` headers. A sandbox that is paused,
//!   gone or hidden by a fault gets the proxy's 502 `The sandbox was not found`; a port nothing listens on
//!   the 502 `The sandbox is running but port is not open`; a host it cannot route the proxy's 400s.
//!   Port 49983 is [`envd`]: `/health`, `/files`, and the Connect services `process.Process` and
//!   `filesystem.Filesystem`, behind the sandbox's access token (`X-Access-Token`) when it was created
//!   secure. Any other port is proxied to the sandbox's app ([`preview`]).
//! - **The platform API** (`X-API-Key`): create (`POST /sandboxes` with `secure`, `POST /v2/sandboxes`
//!   always secure), info, list (v2, with metadata, state, order and template filters), pause, connect
//!   (v1 and v2, which only ever extend the timeout), timeout, kill ([`control`]).
//! - `GET|POST /_faults`, a local extension (`X-API-Key`): read or replace the [`FaultConfig`].
//!
//! Differences that remain, by design: a sandbox is a directory plus process groups on this machine, not
//! a VM; envd serves only the sandbox user's home (`/home/user`, with `/home/user/project` the runtime's
//! workspace), and sandbox ports are the ones its commands were given as `PORT` (the runtime maps each
//! to a free host port); errors are JSON even for browsers; signed file URLs are not supported.

mod control;
mod envd;
mod faults;
mod preview;
mod registry;
mod routing;
mod wire;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use domain::ports::{ProviderState, SandboxError, SandboxRuntime};
use domain::SandboxId;
use tower::ServiceExt;

use crate::LocalRuntime;
use faults::ControlFault;
pub use faults::{FaultConfig, FaultConfigError};
use registry::Registry;
pub use routing::ENVD_PORT;

/// How the server presents itself.
#[derive(Debug, Clone)]
pub struct E2bServerConfig {
    /// The only `X-API-Key` accepted.
    pub api_key: String,
    /// The domain sandbox hosts live under, answered at create and connect (see [`local_domain`]).
    pub domain: String,
    /// Active from the start.
    pub faults: FaultConfig,
}

/// The domain of a server listening on `addr`: `localhost:{port}`, whose sandbox hosts
/// (`3000-{id}.localhost:{port}`) a browser resolves to this machine.
pub fn local_domain(addr: SocketAddr) -> String {
    format!("localhost:{}", addr.port())
}

/// Shared by every handler.
#[derive(Clone)]
pub(crate) struct ServerState {
    pub runtime: LocalRuntime,
    api_key: Arc<str>,
    pub domain: Arc<str>,
    faults: Arc<RwLock<FaultConfig>>,
    pub registry: Registry,
    pub processes: envd::Processes,
    /// Forwards preview requests; follows no redirects (the browser does).
    pub proxy: reqwest::Client,
}

impl ServerState {
    pub fn faults(&self) -> FaultConfig {
        self.faults.read().map(|f| f.clone()).unwrap_or_default()
    }

    /// Whether this create is one of the next ones the faults make ambiguous; counts it down.
    fn take_ambiguous_create(&self) -> bool {
        let Ok(mut faults) = self.faults.write() else {
            return false;
        };
        if faults.ambiguous_next_creates == 0 {
            return false;
        }
        faults.ambiguous_next_creates -= 1;
        true
    }

    /// `NotFound` when the fault configuration hides this sandbox.
    pub fn check_visible(&self, id: &str) -> Result<(), SandboxError> {
        if self.faults().hides(id) {
            return Err(wire::not_found(id));
        }
        Ok(())
    }

    /// The sandbox behind a sandbox-port request, when it runs; the proxy's answer otherwise.
    async fn running(&self, raw: &str) -> Result<SandboxId, Response> {
        let gone = || routing::sandbox_not_found(raw);
        if self.faults().hides(raw) {
            return Err(gone());
        }
        let id = SandboxId::try_from(raw).map_err(|_| gone())?;
        match self.runtime.state(&id).await {
            Ok(ProviderState::Running) => Ok(id),
            // E2B's proxy does not know a paused sandbox (no auto-resume here).
            Ok(ProviderState::Paused) | Err(SandboxError::NotFound(_)) => Err(gone()),
            Err(e) => Err(wire::ApiError(e).into_response()),
        }
    }
}

/// The E2B-compatible router over `runtime`.
pub fn router(runtime: LocalRuntime, config: E2bServerConfig) -> Router {
    let state = ServerState {
        runtime,
        api_key: Arc::from(config.api_key.as_str()),
        domain: Arc::from(config.domain.as_str()),
        faults: Arc::new(RwLock::new(config.faults)),
        registry: Registry::default(),
        processes: envd::Processes::default(),
        proxy: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default(),
    };
    let platform = Router::new()
        .route("/sandboxes", post(control::create_v1))
        .route("/v2/sandboxes", get(control::list).post(control::create_v2))
        .route(
            "/sandboxes/{id}",
            get(control::detail).delete(control::kill),
        )
        .route("/sandboxes/{id}/pause", post(control::pause))
        .route("/sandboxes/{id}/connect", post(control::connect_v1))
        .route("/v2/sandboxes/{id}/connect", post(control::connect_v2))
        .route("/sandboxes/{id}/timeout", post(control::set_timeout))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            control_faults,
        ))
        .route("/_faults", get(get_faults).post(set_faults))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ))
        .with_state(state.clone());
    let dispatch = Dispatch {
        envd: envd::router(state.clone()),
        state: state.clone(),
        platform,
    };
    Router::new()
        .fallback(dispatch_request)
        .with_state(dispatch)
        .layer(middleware::from_fn_with_state(state, add_latency))
}

/// Where a request goes.
#[derive(Clone)]
struct Dispatch {
    state: ServerState,
    platform: Router,
    envd: Router,
}

/// The sandbox an envd request is for, found by [`dispatch_request`].
#[derive(Debug, Clone)]
pub(crate) struct EnvdTarget(pub SandboxId);

async fn dispatch_request(State(d): State<Dispatch>, mut req: Request) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let target = match routing::target(&host, req.headers(), &d.state.domain) {
        Err(refusal) => return refusal.into_response(),
        Ok(None) => return d.platform.oneshot(req).await.into_response(),
        Ok(Some(target)) => target,
    };
    let id = match d.state.running(&target.sandbox_id).await {
        Ok(id) => id,
        Err(answer) => return answer,
    };
    if target.port == ENVD_PORT {
        req.extensions_mut().insert(EnvdTarget(id));
        d.envd.oneshot(req).await.into_response()
    } else {
        let meta = d.state.registry.get_or_adopt(id.as_str(), None);
        if let Some(expected) = &meta.traffic {
            match req.headers().get(routing::TRAFFIC_TOKEN_HEADER) {
                None => return routing::traffic_token_refused(id.as_str(), true),
                Some(given) if !expected.matches(given.to_str().unwrap_or("")) => {
                    return routing::traffic_token_refused(id.as_str(), false)
                }
                Some(_) => {}
            }
        }
        preview::forward(&d.state, &id, target.port, &host, req).await
    }
}

async fn require_api_key(State(state): State<ServerState>, req: Request, next: Next) -> Response {
    let given = req.headers().get("x-api-key").and_then(|v| v.to_str().ok());
    if given != Some(&*state.api_key) {
        return wire::error_response(StatusCode::UNAUTHORIZED, "Invalid API key");
    }
    next.run(req).await
}

/// Injected control-plane failures: refused before processing, or answered as failed after it.
async fn control_faults(State(state): State<ServerState>, req: Request, next: Next) -> Response {
    let faults = state.faults();
    let creating = req.method() == axum::http::Method::POST
        && matches!(req.uri().path(), "/sandboxes" | "/v2/sandboxes");
    let fault = if creating && state.take_ambiguous_create() {
        ControlFault::Ambiguous
    } else {
        faults.control_fault()
    };
    if fault == ControlFault::None {
        return next.run(req).await;
    }
    let path = req.uri().path().to_owned();
    if fault == ControlFault::Ambiguous {
        let _ = next.run(req).await;
    }
    tracing::warn!(?fault, path, "failing this call (injected)");
    let status =
        StatusCode::from_u16(faults.control_fail_status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut answer = wire::error_response(status, "injected fault");
    if let Some(secs) = faults.retry_after_secs {
        answer
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    answer
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
