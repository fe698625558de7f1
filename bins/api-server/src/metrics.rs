//! Prometheus metrics: requests by route and status, latency histograms, jobs submitted and cancelled, and
//! jobs by status (counted at scrape time).

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use domain::JobStatus;

const REQUESTS: &str = "http_requests_total";
const LATENCY: &str = "http_request_duration_seconds";

/// Middleware: counts and times each request under its route template (never the raw path, whose ids
/// would explode the label set).
pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(REQUESTS, "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(LATENCY, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The method as a label, without an allocation for the methods the API serves.
fn method_label(method: &Method) -> metrics::SharedString {
    match *method {
        Method::GET => metrics::SharedString::const_str("GET"),
        Method::POST => metrics::SharedString::const_str("POST"),
        Method::HEAD => metrics::SharedString::const_str("HEAD"),
        _ => metrics::SharedString::from_owned(method.as_str().to_owned()),
    }
}

pub fn job_submitted(status: JobStatus) {
    metrics::counter!("slipway_jobs_submitted_total", "status" => status.as_str()).increment(1);
}

/// One resume from request to answer (single flight: concurrent callers of one job each record theirs).
pub fn resume_finished(outcome: &'static str, elapsed: std::time::Duration) {
    metrics::histogram!("slipway_resume_seconds", "outcome" => outcome)
        .record(elapsed.as_secs_f64());
}

pub fn job_cancelled() {
    metrics::counter!("slipway_jobs_cancelled_total").increment(1);
}

/// Sets the `slipway_jobs{status}` gauge; statuses without jobs read 0.
pub fn set_job_counts(counts: &[(String, i64)]) {
    for status in JobStatus::ALL {
        let n = counts
            .iter()
            .find(|(s, _)| s == status.as_str())
            .map_or(0, |(_, n)| *n);
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!("slipway_jobs", "status" => status.as_str()).set(n as f64);
    }
}

/// Sets `slipway_status_cache_reads_total{result}`: status reads answered from memory (`hit`), read from
/// Redis and kept (`miss`), or read from Redis while it was not tracking them (`untracked`).
pub fn set_status_cache(stats: infra_redis::CacheStats) {
    for (result, n) in [
        ("hit", stats.hits),
        ("miss", stats.misses),
        ("untracked", stats.untracked),
    ] {
        metrics::counter!("slipway_status_cache_reads_total", "result" => result).absolute(n);
    }
}

/// Sets `slipway_ready_sandboxes_unpaused`: READY builds whose sandbox may be billing. Its integral over time
/// (`sum_over_time(…) × scrape interval`) is the running sandbox-seconds after READY, the idle bill.
pub fn set_ready_unpaused(n: i64) {
    #[allow(clippy::cast_precision_loss)]
    metrics::gauge!("slipway_ready_sandboxes_unpaused").set(n as f64);
}
