//! One log line per failed request, carrying the request id and the debug id the client was given, so
//! that a 5xx's debug id always leads to its cause.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

use crate::error::ErrorReport;

/// Middleware: logs each 5xx (error) once with its cause; 4xx at debug.
pub async fn log_failures(req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = next.run(req).await;
    let status = response.status();
    if !status.is_client_error() && !status.is_server_error() {
        return response;
    }
    let report = response.extensions().get::<ErrorReport>();
    let debug_id = report.map(|r| r.debug_id.to_string()).unwrap_or_default();
    let cause = report.and_then(|r| r.cause.as_deref()).unwrap_or_default();
    if status.is_server_error() {
        tracing::error!(
            %request_id, %debug_id, status = status.as_u16(), %method, %path, cause,
            "request failed"
        );
    } else {
        tracing::debug!(%request_id, %debug_id, status = status.as_u16(), %method, %path, "request refused");
    }
    response
}
