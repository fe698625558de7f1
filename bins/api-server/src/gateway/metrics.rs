//! The gateway's metrics: wakes by outcome and their latency, proxied requests and bytes, open upstream
//! sockets, and the seconds a visitor was on a preview (set against `slipway_ready_sandboxes_unpaused`,
//! what the pause policy costs).

use std::time::Duration;

const WAKES: &str = "slipway_gateway_wakes_total";
const WAKE_SECONDS: &str = "slipway_gateway_wake_seconds";
const REQUESTS: &str = "slipway_gateway_requests_total";
const BYTES: &str = "slipway_gateway_bytes_total";
const SOCKETS: &str = "slipway_gateway_open_websockets";
const IN_FLIGHT: &str = "slipway_gateway_upstream_requests";
const VISITED: &str = "slipway_sandbox_visited_seconds_total";

/// How a wake ended.
pub const WAKE_OUTCOMES: [&str; 4] = ["woken", "expired", "unreachable", "error"];
/// What the gateway did with a request.
pub const REQUEST_OUTCOMES: [&str; 7] = [
    "proxied",
    "woken",
    "waking_page",
    "asleep",
    "gone",
    "not_found",
    "upstream_error",
];

pub fn register() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        WAKES,
        "Wakes of a paused sandbox by the preview gateway, by outcome"
    );
    describe_histogram!(
        WAKE_SECONDS,
        Unit::Seconds,
        "From the first request that woke a sandbox to its answer being proxied"
    );
    describe_counter!(REQUESTS, "Requests to previews, by what the gateway did");
    describe_counter!(
        BYTES,
        Unit::Bytes,
        "Body bytes proxied, by direction (up: to the sandbox, down: to the browser)"
    );
    describe_gauge!(SOCKETS, "WebSockets proxied to sandboxes now");
    describe_gauge!(
        IN_FLIGHT,
        "Requests to sandboxes in flight now, their answers' bodies still streaming included"
    );
    describe_counter!(
        VISITED,
        Unit::Seconds,
        "Sandbox-seconds with a visitor: each preview with activity counts the whole write interval"
    );
    for outcome in WAKE_OUTCOMES {
        metrics::counter!(WAKES, "outcome" => outcome).absolute(0);
    }
    for outcome in REQUEST_OUTCOMES {
        metrics::counter!(REQUESTS, "outcome" => outcome).absolute(0);
    }
    for direction in ["up", "down"] {
        metrics::counter!(BYTES, "direction" => direction).absolute(0);
    }
    metrics::gauge!(SOCKETS).set(0.0);
    // Registered now, so that its series are on /metrics before the first wake.
    let _ = metrics::histogram!(WAKE_SECONDS);
    metrics::gauge!(IN_FLIGHT).set(0.0);
    metrics::counter!(VISITED).absolute(0);
}

pub fn request(outcome: &'static str) {
    metrics::counter!(REQUESTS, "outcome" => outcome).increment(1);
}

pub fn wake(outcome: &'static str, took: Duration) {
    metrics::counter!(WAKES, "outcome" => outcome).increment(1);
    if outcome == "woken" {
        metrics::histogram!(WAKE_SECONDS).record(took.as_secs_f64());
    }
}

pub fn bytes(direction: &'static str, n: usize) {
    metrics::counter!(BYTES, "direction" => direction).increment(n as u64);
}

pub fn socket_opened() {
    metrics::gauge!(SOCKETS).increment(1.0);
}

pub fn socket_closed() {
    metrics::gauge!(SOCKETS).decrement(1.0);
}

pub fn visited(previews: usize, every: Duration) {
    metrics::counter!(VISITED).increment(previews as u64 * every.as_secs());
}

/// Counts one request to a sandbox in flight until dropped (with the answer's body).
pub struct InFlight(());

impl InFlight {
    pub fn start() -> Self {
        metrics::gauge!(IN_FLIGHT).increment(1.0);
        Self(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(IN_FLIGHT).decrement(1.0);
    }
}
