//! The gateway's own answers: the "waking up" page, the expired page, and the plain 503/410/404s for
//! requests that are not a browser navigation.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;

/// Seconds a client is told to wait before trying again.
pub const RETRY_AFTER_SECS: u64 = 2;

const WAKING: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
<title>Waking up…</title>
<style>body{font:16px system-ui,sans-serif;display:grid;place-items:center;height:100vh;margin:0;color:#333}</style>
</head><body><main><h1>Waking up your preview…</h1><p>It was asleep to save resources. This page reloads by itself.</p></main>
<script>setTimeout(function(){location.reload()},2000)</script></body></html>"#;

const EXPIRED: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Preview expired</title>
<style>body{font:16px system-ui,sans-serif;display:grid;place-items:center;height:100vh;margin:0;color:#333}</style>
</head><body><main><h1>This preview has expired</h1><p>Its sandbox no longer exists. Rebuild the project to get a new preview.</p></main></body></html>"#;

fn answer(status: StatusCode, content_type: &'static str, body: &'static str) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn retry_later(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    response
}

/// A navigation whose wake is taking a while: a page that reloads itself.
pub fn waking() -> Response {
    retry_later(answer(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/html; charset=utf-8",
        WAKING,
    ))
}

/// A request that may not wake the sandbox, or that waited for a wake past the bound.
pub fn asleep() -> Response {
    retry_later(answer(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/plain; charset=utf-8",
        "The preview is asleep. Open it in a browser to wake it.\n",
    ))
}

/// The wake did not finish in time (or failed for now): try again.
pub fn still_waking() -> Response {
    retry_later(answer(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/plain; charset=utf-8",
        "The preview is waking up. Try again shortly.\n",
    ))
}

/// The sandbox is gone for good.
pub fn expired(navigation: bool) -> Response {
    if navigation {
        answer(StatusCode::GONE, "text/html; charset=utf-8", EXPIRED)
    } else {
        answer(
            StatusCode::GONE,
            "text/plain; charset=utf-8",
            "This preview has expired: its sandbox no longer exists.\n",
        )
    }
}

pub fn not_found() -> Response {
    answer(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        "No preview here.\n",
    )
}

/// The app did not answer (its dev server is down, or the sandbox stopped under the request).
pub fn bad_gateway() -> Response {
    answer(
        StatusCode::BAD_GATEWAY,
        "text/plain; charset=utf-8",
        "The preview did not answer.\n",
    )
}
