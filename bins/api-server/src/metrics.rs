//! Prometheus metrics: requests by route and status, latency histograms, jobs submitted and cancelled,
//! resumes, open event streams, and what Postgres says at scrape time (jobs by status, the queue's oldest
//! wait, READY sandboxes still billing). [`register`] declares them all at start; `deploy/prometheus` and
//! `deploy/grafana` use these names, and a test checks every name they use is on `/metrics`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use domain::JobStatus;

const REQUESTS: &str = "http_requests_total";
const LATENCY: &str = "http_request_duration_seconds";
const SUBMITTED: &str = "slipway_jobs_submitted_total";
const CANCELLED: &str = "slipway_jobs_cancelled_total";
const RESUME: &str = "slipway_resume_seconds";
const JOBS: &str = "slipway_jobs";
const CACHE_READS: &str = "slipway_status_cache_reads_total";
const READY_UNPAUSED: &str = "slipway_ready_sandboxes_unpaused";
const READY_UNPAUSED_IDLE: &str = "slipway_ready_unpaused_idle_seconds";
const QUEUE_OLDEST: &str = "slipway_queue_oldest_seconds";
const BILLED: &str = "slipway_sandbox_billed_seconds";
const VISITED: &str = "slipway_sandbox_visited_seconds";
const SSE_STREAMS: &str = "slipway_sse_streams";
const CONNECTIONS_CLOSED: &str = "slipway_http_connections_closed_total";

/// Why the server closed a connection itself (`serve`): an idle one evicted at the cap to admit a new one,
/// or a new one refused because every open connection had a request in flight.
const CLOSE_REASONS: [&str; 2] = ["evicted", "refused"];

/// Resume outcomes (`routes::lifecycle`): started at zero so that the first failure of a kind is a change.
const RESUME_OUTCOMES: [&str; 7] = [
    "resumed",
    "sandbox_expired",
    "sandbox_unreachable",
    "not_found",
    "no_sandbox",
    "not_ready",
    "store_error",
];

/// Declares every metric this process exports, with its help text, and starts the series whose labels are
/// known in advance at zero: each exists from start, so `increase()` sees the first event.
pub fn register() {
    crate::gateway::metrics::register();
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        REQUESTS,
        "HTTP requests answered, by method, route template and status"
    );
    describe_histogram!(
        LATENCY,
        Unit::Seconds,
        "HTTP request latency, by method and route template"
    );
    describe_counter!(
        SUBMITTED,
        "Jobs accepted, by the status they start in (queued or scheduled)"
    );
    describe_counter!(CANCELLED, "Jobs cancelled through the API");
    describe_histogram!(
        RESUME,
        Unit::Seconds,
        "Resumes from request to answer, by outcome"
    );
    describe_gauge!(JOBS, "Jobs by status, counted in Postgres at scrape time");
    describe_counter!(
        CACHE_READS,
        "Status reads by cache result (hit, miss, untracked)"
    );
    describe_gauge!(
        READY_UNPAUSED,
        "READY jobs whose sandbox may be billing (live and not paused)"
    );
    describe_gauge!(
        READY_UNPAUSED_IDLE,
        Unit::Seconds,
        "Longest time a READY job's unpaused sandbox has gone without activity, resume or READY"
    );
    describe_gauge!(
        QUEUE_OLDEST,
        Unit::Seconds,
        "How long the job queued longest has waited since it entered the queue"
    );
    describe_gauge!(
        BILLED,
        Unit::Seconds,
        "Sandbox-seconds billed, every build (Postgres at scrape time, the spells in progress included)"
    );
    describe_gauge!(
        VISITED,
        Unit::Seconds,
        "Sandbox-seconds with a visitor on the preview, every build (seen by the preview gateway)"
    );
    describe_gauge!(SSE_STREAMS, "Server-Sent Events streams open, by stream");
    describe_counter!(
        CONNECTIONS_CLOSED,
        "Connections the server closed at its connection cap: idle ones evicted, new ones refused"
    );
    for reason in CLOSE_REASONS {
        metrics::counter!(CONNECTIONS_CLOSED, "reason" => reason).absolute(0);
    }
    for status in [JobStatus::Queued, JobStatus::Scheduled] {
        metrics::counter!(SUBMITTED, "status" => status.as_str()).absolute(0);
    }
    metrics::counter!(CANCELLED).absolute(0);
    for outcome in RESUME_OUTCOMES {
        let _ = metrics::histogram!(RESUME, "outcome" => outcome);
    }
    for status in JobStatus::ALL {
        let _ = metrics::gauge!(JOBS, "status" => status.as_str());
    }
    let _ = metrics::gauge!(READY_UNPAUSED);
    let _ = metrics::gauge!(READY_UNPAUSED_IDLE);
    let _ = metrics::gauge!(QUEUE_OLDEST);
    let _ = metrics::gauge!(BILLED);
    let _ = metrics::gauge!(VISITED);
    let _ = metrics::gauge!(SSE_STREAMS, "stream" => EVENTS_STREAM);
    let _ = metrics::gauge!(SSE_STREAMS, "stream" => LOGS_STREAM);
    bin_support::metrics::register_sandbox_ops();
}

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

/// The method as a label, from a closed set: the standard methods, and `other` for anything a client
/// invents (each invented method would otherwise be a new series, kept forever).
fn method_label(method: &Method) -> metrics::SharedString {
    let known = match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    };
    metrics::SharedString::const_str(known)
}

/// A connection admitted after evicting `evicted` idle ones.
pub fn connection_admitted(evicted: usize) {
    if evicted > 0 {
        metrics::counter!(CONNECTIONS_CLOSED, "reason" => CLOSE_REASONS[0])
            .increment(u64::try_from(evicted).unwrap_or(u64::MAX));
    }
}

/// A connection refused at the cap.
pub fn connection_refused() {
    metrics::counter!(CONNECTIONS_CLOSED, "reason" => CLOSE_REASONS[1]).increment(1);
}

pub fn job_submitted(status: JobStatus) {
    metrics::counter!(SUBMITTED, "status" => status.as_str()).increment(1);
}

/// One resume from request to answer (single flight: concurrent callers of one job each record theirs).
pub fn resume_finished(outcome: &'static str, elapsed: std::time::Duration) {
    metrics::histogram!(RESUME, "outcome" => outcome).record(elapsed.as_secs_f64());
}

pub fn job_cancelled() {
    metrics::counter!(CANCELLED).increment(1);
}

/// Sets the gauges Postgres answers at scrape time: `slipway_jobs{status}` (statuses without jobs read 0),
/// `slipway_ready_sandboxes_unpaused` (READY builds whose sandbox may be billing: its integral over time,
/// `sum_over_time(…) × scrape interval`, is the sandbox-seconds billed after READY, the idle bill), how long
/// the most idle of those has gone without a reason to run, and the queue's oldest wait.
#[allow(clippy::cast_precision_loss)]
pub fn set_job_counts(counts: &infra_pg::JobCounts) {
    for status in JobStatus::ALL {
        let n = counts
            .by_status
            .iter()
            .find(|(s, _)| s == status.as_str())
            .map_or(0, |(_, n)| *n);
        metrics::gauge!(JOBS, "status" => status.as_str()).set(n as f64);
    }
    metrics::gauge!(READY_UNPAUSED).set(counts.ready_unpaused as f64);
    metrics::gauge!(READY_UNPAUSED_IDLE).set(counts.ready_unpaused_idle_seconds);
    metrics::gauge!(QUEUE_OLDEST).set(counts.oldest_queued_seconds);
    metrics::gauge!(BILLED).set(counts.sandbox_billed_seconds);
    metrics::gauge!(VISITED).set(counts.sandbox_visited_seconds);
}

/// Sets `slipway_status_cache_reads_total{result}`: status reads answered from memory (`hit`), read from
/// Redis and kept (`miss`), or read from Redis while it was not tracking them (`untracked`).
pub fn set_status_cache(stats: infra_redis::CacheStats) {
    for (result, n) in [
        ("hit", stats.hits),
        ("miss", stats.misses),
        ("untracked", stats.untracked),
    ] {
        metrics::counter!(CACHE_READS, "result" => result).absolute(n);
    }
}

/// The `stream` label of the job event streams (`GET /api/generation/{job_id}/events`).
pub const EVENTS_STREAM: &str = "events";
/// The `stream` label of `/api/jobs/{job_id}/logs/stream`.
pub const LOGS_STREAM: &str = "logs";

/// Counts one open Server-Sent Events stream in `slipway_sse_streams{stream}` until it is dropped.
pub struct OpenStream(&'static str);

impl OpenStream {
    pub fn new(stream: &'static str) -> Self {
        metrics::gauge!(SSE_STREAMS, "stream" => stream).increment(1.0);
        Self(stream)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::gauge!(SSE_STREAMS, "stream" => self.0).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;

    #[test]
    fn invented_methods_share_one_label() {
        let invented = Method::from_bytes(&[b'X'; 300]).unwrap();
        assert_eq!(method_label(&invented).as_ref(), "other");
        assert_eq!(method_label(&Method::DELETE).as_ref(), "DELETE");
    }

    #[test]
    fn an_event_stream_is_counted_open_until_dropped() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let open = |n: usize| format!("slipway_sse_streams{{stream=\"events\"}} {n}");
        metrics::with_local_recorder(&recorder, || {
            let first = OpenStream::new(EVENTS_STREAM);
            let second = OpenStream::new(EVENTS_STREAM);
            assert!(handle.render().contains(&open(2)), "{}", handle.render());
            drop(first);
            assert!(handle.render().contains(&open(1)), "{}", handle.render());
            drop(second);
            assert!(handle.render().contains(&open(0)), "{}", handle.render());
        });
    }
}
