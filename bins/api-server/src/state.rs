//! What every handler shares: the ports as trait objects, the verifier, the limits and the shutdown signal.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use domain::ports::{
    JobQueue, JobRepository, LiveJobStore, LiveLog, LogArchive, PreviewProbe, SandboxRuntime,
};
use domain::usecases::activity::Activity;
use domain::usecases::cancel::CancelDeps;
use domain::usecases::resume::ResumeService;
use domain::usecases::snapshot::SnapshotService;
use domain::usecases::submit::SubmitDeps;
use domain::TierTable;

use crate::auth::JwtVerifier;

/// What `GET /metrics` counts in Postgres at scrape time.
pub use infra_pg::JobCounts;

/// One dependency's answer to a readiness probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    /// `Err` holds the reason, for the log (the response only says which dependency failed).
    pub result: Result<(), String>,
}

/// Readiness and cheap operational counts, straight from the backing services.
#[async_trait]
pub trait HealthCheck: Send + Sync {
    /// Pings each dependency (Postgres `SELECT 1`, Redis `PING`).
    async fn check(&self) -> Vec<Check>;

    /// Jobs per status, and READY jobs whose sandbox is live and not paused, for the `slipway_jobs` and
    /// `slipway_ready_sandboxes_unpaused` gauges; `None` when they cannot be counted now.
    async fn job_counts(&self) -> Option<JobCounts>;
}

/// The handlers' shared state. Behind one `Arc`: axum clones the state for every request, and cloning the
/// fields one by one (a score of reference counts) showed in the status route's profile.
pub type AppState = Arc<Shared>;

/// What [`AppState`] points to.
pub struct Shared {
    pub repo: Arc<dyn JobRepository>,
    pub live: Arc<dyn LiveJobStore>,
    /// The live store behind an in-process cache that Redis keeps coherent: for the status route only (see
    /// [`infra_redis::CachedLiveStore`] for why event streams and use cases must not read through it).
    pub status_reads: infra_redis::CachedLiveStore,
    pub queue: Arc<dyn JobQueue>,
    pub sandbox: Arc<dyn SandboxRuntime>,
    pub probe: Arc<dyn PreviewProbe>,
    pub health: Arc<dyn HealthCheck>,
    /// Builds' live logs (Redis).
    pub logs: Arc<dyn LiveLog>,
    /// Finished builds' logs (Postgres).
    pub log_archive: Arc<dyn LogArchive>,
    /// Resume (single-flight per job, bounded in time).
    pub resume: ResumeService,
    /// Snapshot (pause on request).
    pub snapshot: SnapshotService,
    /// Notes preview activity, which keeps a resumed sandbox awake.
    pub activity: Activity,
    pub auth: Arc<JwtVerifier>,
    pub tiers: Arc<TierTable>,
    /// `None` when another recorder owns the process (the route then answers 503).
    pub metrics: Option<PrometheusHandle>,
    /// Cancelled when the server shuts down, so that event streams end and connections can drain.
    pub shutdown: CancellationToken,
    /// Deadline of one request (event streams excepted).
    pub request_timeout: Duration,
    /// Interval of the SSE heartbeat comment.
    pub sse_heartbeat: Duration,
    /// The preview gateway's settings when it is on: every `preview_url` answered is then the gateway's.
    pub gateway: Option<crate::gateway::GatewayConfig>,
}

impl Shared {
    /// The preview URL `job`'s owner is given: the gateway's when it is on (with a fresh token in
    /// `signed` mode), else the sandbox's own.
    pub fn preview_url_of(&self, job: &domain::Job) -> Option<String> {
        self.public_preview(job.id, job.preview_url.as_deref())
    }

    /// `direct` (a sandbox's own preview URL) as `job`'s owner is given it.
    pub fn public_preview(&self, job: domain::JobId, direct: Option<&str>) -> Option<String> {
        let direct = direct?;
        Some(match &self.gateway {
            Some(gateway) => gateway.links.url_for(job, chrono::Utc::now()),
            None => direct.to_owned(),
        })
    }

    /// Whether API calls count as preview activity: only without the gateway, which sees the visitors
    /// themselves (a status poll is not someone looking at the app).
    pub fn api_calls_are_activity(&self) -> bool {
        self.gateway.is_none()
    }

    pub fn submit_deps(&self) -> SubmitDeps<'_> {
        SubmitDeps {
            repo: self.repo.as_ref(),
            live: self.live.as_ref(),
            queue: self.queue.as_ref(),
            tiers: &self.tiers,
        }
    }

    pub fn cancel_deps(&self) -> CancelDeps<'_> {
        CancelDeps {
            repo: self.repo.as_ref(),
            live: self.live.as_ref(),
            queue: self.queue.as_ref(),
            sandbox: self.sandbox.as_ref(),
        }
    }
}
