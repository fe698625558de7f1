//! `GET /metrics` for the worker's Prometheus metrics (builds, pause failures, reconciler steps and changes),
//! served only when `WORKER_METRICS_ADDR` is set: several workers often share a host.

use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves the recorder's text exposition on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new().route("/metrics", get(move || std::future::ready(handle.render())));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
