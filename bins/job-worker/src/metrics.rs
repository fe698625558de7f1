//! The worker's Prometheus metrics, named once here: builds by outcome, pause failures, how long each build
//! stage took, and the reconciler's steps (durations, failures, what they changed, drift corrected).
//! [`register`] declares them all at start; `deploy/prometheus` and `deploy/grafana` use these names, and a
//! test checks every name they use is on `/metrics`.

use domain::usecases::pipeline::BuildOutcome;
use domain::usecases::reconcile::step;

pub(crate) const BUILDS: &str = "slipway_builds_total";
pub(crate) const PAUSE_FAILURES: &str = "slipway_pause_failures_total";
pub(crate) const STAGE_SECONDS: &str = "slipway_stage_seconds";
pub(crate) const STEP_SECONDS: &str = "slipway_reconcile_step_seconds";
pub(crate) const STEP_FAILURES: &str = "slipway_reconcile_step_failures_total";
pub(crate) const CHANGES: &str = "slipway_reconcile_changes_total";
pub(crate) const DRIFT: &str = "slipway_drift_corrections_total";

/// Every reconciler step, as the domain names them.
pub(crate) const STEPS: [&str; 7] = [
    step::LEASES,
    step::REBUILD,
    step::PROMOTE,
    step::DRIFT,
    step::LEAKS,
    step::FAILED_PAUSES,
    step::IDLE,
];

/// The `kind` labels of `slipway_reconcile_changes_total`.
pub(crate) mod change {
    pub const REQUEUED: &str = "requeued";
    pub const LEASE_FAILED: &str = "lease_failed";
    /// A sandbox killed because no live job owns it (a leak, or the sandbox of a job whose lease expired).
    pub const LEAKED_KILLED: &str = "leaked_killed";
    pub const QUEUE_REBUILT: &str = "queue_rebuilt";
    pub const HASH_REBUILT: &str = "hash_rebuilt";
    pub const PROMOTED: &str = "promoted";
    pub const PAUSE_RETRIED_OK: &str = "pause_retried_ok";
    pub const PAUSE_RETRY_FAILED: &str = "pause_retry_failed";
    pub const PAUSE_GAVE_UP: &str = "pause_gave_up";
    pub const IDLE_REPAUSED: &str = "idle_repaused";

    pub const ALL: [&str; 10] = [
        REQUEUED,
        LEASE_FAILED,
        LEAKED_KILLED,
        QUEUE_REBUILT,
        HASH_REBUILT,
        PROMOTED,
        PAUSE_RETRIED_OK,
        PAUSE_RETRY_FAILED,
        PAUSE_GAVE_UP,
        IDLE_REPAUSED,
    ];
}

/// The `kind` labels of `slipway_drift_corrections_total`: what the provider said against our record.
pub(crate) mod drift {
    pub const TO_PAUSED: &str = "to_paused";
    pub const TO_RUNNING: &str = "to_running";
    pub const TO_EXPIRED: &str = "to_expired";
    pub const STALE_SETTLED: &str = "stale_settled";

    pub const ALL: [&str; 4] = [TO_PAUSED, TO_RUNNING, TO_EXPIRED, STALE_SETTLED];
}

/// The `outcome` labels of `slipway_builds_total`.
const BUILD_OUTCOMES: [&str; 5] = ["ready", "failed", "cancelled", "lost", "interrupted"];

fn outcome_label(outcome: &BuildOutcome) -> &'static str {
    match outcome {
        BuildOutcome::Ready { .. } => BUILD_OUTCOMES[0],
        BuildOutcome::Failed { .. } => BUILD_OUTCOMES[1],
        BuildOutcome::Cancelled => BUILD_OUTCOMES[2],
        BuildOutcome::Lost { .. } => BUILD_OUTCOMES[3],
        BuildOutcome::Interrupted { .. } => BUILD_OUTCOMES[4],
    }
}

/// Declares every metric this process exports, with its help text, and starts every series whose labels
/// are known in advance at zero: each exists from start, so `increase()` sees the first event.
pub fn register() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_counter!(BUILDS, "Builds finished by this worker, by outcome");
    describe_counter!(
        PAUSE_FAILURES,
        "Builds that reached READY but whose sandbox the provider did not pause (the reconciler retries)"
    );
    describe_histogram!(
        STAGE_SECONDS,
        Unit::Seconds,
        "How long each build stage took, from its start to the next stage's (Postgres's clock)"
    );
    describe_histogram!(
        STEP_SECONDS,
        Unit::Seconds,
        "Reconciler step durations, by step"
    );
    describe_counter!(STEP_FAILURES, "Reconciler steps that failed, by step");
    describe_counter!(CHANGES, "What the reconciler changed, by kind");
    describe_counter!(
        DRIFT,
        "Sandbox states corrected to what the provider says, by kind"
    );
    for outcome in BUILD_OUTCOMES {
        metrics::counter!(BUILDS, "outcome" => outcome).absolute(0);
    }
    metrics::counter!(PAUSE_FAILURES).absolute(0);
    for stage in crate::stage_timer::TIMED_STAGES {
        let _ = metrics::histogram!(STAGE_SECONDS, "stage" => stage.as_str());
    }
    for step in STEPS {
        let _ = metrics::histogram!(STEP_SECONDS, "step" => step);
        metrics::counter!(STEP_FAILURES, "step" => step).absolute(0);
    }
    for kind in change::ALL {
        metrics::counter!(CHANGES, "kind" => kind).absolute(0);
    }
    for kind in drift::ALL {
        metrics::counter!(DRIFT, "kind" => kind).absolute(0);
    }
    bin_support::metrics::register_sandbox_ops();
}

/// Counts a finished build (and a READY whose pause failed).
pub(crate) fn build_finished(outcome: &BuildOutcome) {
    metrics::counter!(BUILDS, "outcome" => outcome_label(outcome)).increment(1);
    if let BuildOutcome::Ready {
        pause_failed: true, ..
    } = outcome
    {
        metrics::counter!(PAUSE_FAILURES).increment(1);
    }
}
