//! Slipway's HTTP API: the axum adapter over the domain's use cases, compatible with the existing front end
//! (paths, JSON field names and `{detail, debug_id}` errors of the Python API it replaces).
//!
//! [`router`] builds the whole application from an [`AppState`] (tests drive it in-process); [`run`]
//! serves it until the shutdown future resolves; [`wiring::build_state`] connects the real adapters.

pub mod auth;
pub mod config;
pub mod error;
pub mod gateway;
pub mod metrics;
pub mod openapi;
pub mod preview_check;
pub mod request_id;
pub mod request_log;
pub mod routes;
pub mod serve;
pub mod sse;
pub mod state;
pub mod wiring;

use std::future::Future;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{BoxError, Router};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

pub use config::Config;
pub use error::ApiError;
pub use serve::ServeLimits;
pub use state::{AppState, Check, HealthCheck, JobCounts, Shared};

use routes::{generation, health, jobs, lifecycle, logs, projects};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The whole application.
pub fn router(state: AppState) -> Router {
    let timeout = state.request_timeout;
    // Every route but the event stream (it lives as long as the build) and resume/snapshot (their use
    // cases bound their own time).
    let bounded = Router::new()
        .route("/api/generation/start", post(generation::start))
        .route("/api/generation/{job_id}/status", get(generation::status))
        .route("/api/generation/{job_id}/cancel", post(generation::cancel))
        .route(
            "/api/generation/{job_id}/preview-check",
            get(generation::preview_check),
        )
        .route("/api/jobs", post(jobs::submit))
        .route("/api/jobs/{job_id}", get(jobs::get))
        .route("/api/jobs/{job_id}/logs", get(logs::history))
        .route("/api/projects", post(projects::create).get(projects::list))
        .route(
            "/api/projects/{project_id}",
            get(projects::get).delete(projects::delete),
        )
        .route("/api/openapi.json", get(openapi::openapi_json))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(timeout_error))
                .timeout(timeout),
        );
    let self_bounded = Router::new()
        .route("/api/generation/{job_id}/events", get(sse::events))
        .route("/api/jobs/{job_id}/logs/stream", get(logs::stream))
        .route("/api/generation/{job_id}/resume", post(lifecycle::resume))
        .route(
            "/api/generation/{job_id}/snapshot",
            post(lifecycle::snapshot),
        );

    Router::new()
        .merge(bounded)
        .merge(self_bounded)
        .fallback(|| async { ApiError::NotFound("Not found") })
        .method_not_allowed_fallback(|| async {
            ApiError::BadRequest {
                status: StatusCode::METHOD_NOT_ALLOWED,
                message: "Method not allowed".into(),
            }
        })
        .route_layer(axum::middleware::from_fn(metrics::track))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(
            ServiceBuilder::new()
                .layer(axum::middleware::from_fn(request_id::keep_if_safe))
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_response(DefaultOnResponse::new().level(Level::INFO)),
                )
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(axum::middleware::from_fn(request_log::log_failures))
                .layer(CatchPanicLayer::custom(panic_response)),
        )
        .with_state(state)
}

fn request_span<B>(req: &Request<B>) -> tracing::Span {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        request_id = %request_id,
        user_id = tracing::field::Empty,
    )
}

async fn timeout_error(err: BoxError) -> ApiError {
    if err.is::<tower::timeout::error::Elapsed>() {
        ApiError::Busy("Request timed out".into())
    } else {
        ApiError::Internal(anyhow::anyhow!("middleware error: {err}"))
    }
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    error::error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Internal server error".into(),
        Some(format!("handler panicked: {message}")),
    )
}

/// Serves the application on `listener` with the default [`ServeLimits`]; see [`run_with`].
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with(listener, None, state, ServeLimits::default(), shutdown).await
}

/// Serves the application on `listener` until `shutdown` resolves, then stops accepting, ends the event
/// streams and lets in-flight requests finish. With `preview` (and the state's gateway settings), the
/// preview gateway is served on that listener too, until the same shutdown.
pub async fn run_with(
    listener: TcpListener,
    preview: Option<TcpListener>,
    state: AppState,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let token = state.shutdown.clone();
    metrics::register();
    let gateway = match (preview, state.gateway.clone()) {
        (Some(preview), Some(config)) => {
            Some(spawn_gateway(preview, state.clone(), config, limits)?)
        }
        (Some(_), None) => anyhow::bail!("a preview listener needs the gateway's settings"),
        (None, _) => None,
    };
    let app = router(state);
    tracing::info!(
        addr = %listener.local_addr()?,
        max_connections = limits.max_connections,
        header_timeout_ms = u64::try_from(limits.header_timeout.as_millis()).unwrap_or(u64::MAX),
        "api-server listening"
    );
    serve::serve(listener, app, limits, shutdown, move || {
        tracing::info!("shutting down: draining requests and closing event streams");
        token.cancel();
    })
    .await?;
    if let Some(gateway) = gateway {
        gateway.await??;
    }
    Ok(())
}

/// Starts the preview gateway on `listener` and its activity writer; both stop with the server.
fn spawn_gateway(
    listener: TcpListener,
    state: AppState,
    config: gateway::GatewayConfig,
    limits: ServeLimits,
) -> anyhow::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let stop = state.shutdown.clone();
    let gw = gateway::Gateway::new(state.clone(), config.clone())
        .map_err(|e| anyhow::anyhow!("cannot build the preview gateway's client: {e}"))?;
    tokio::spawn(
        gw.activity()
            .clone()
            .run(state.repo.clone(), config.flush_every, stop.clone()),
    );
    tracing::info!(
        addr = %listener.local_addr()?,
        domain = %config.links.domain(),
        access = ?config.links.access(),
        "preview gateway listening"
    );
    let app = gateway::router(gw);
    Ok(tokio::spawn(serve::serve(
        listener,
        app,
        limits,
        async move { stop.cancelled().await },
        || {},
    )))
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(error) => {
                tracing::error!(error = %error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Default SSE heartbeat interval.
pub const SSE_HEARTBEAT: Duration = Duration::from_secs(15);
