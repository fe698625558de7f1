//! Connecting the real adapters (Postgres, Redis, the sandbox runtime, the preview probe) into an
//! [`AppState`]. Tests use [`assemble`] with their own runtime and probe.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use fred::prelude::ClientLike;
use infra_pg::{PgJobRepository, PgPool};
use infra_redis::{CachedLiveStore, Client, RedisLiveStore, RedisQueue};
use tokio_util::sync::CancellationToken;

use domain::ports::{PreviewProbe, SandboxRuntime};
use domain::usecases::activity::Activity;
use domain::usecases::resume::{ResumeConfig, ResumeDeps, ResumeService};
use domain::usecases::snapshot::{SnapshotConfig, SnapshotDeps, SnapshotService};
use domain::TierTable;

use crate::auth::{AuthConfig, JwtVerifier};
use crate::config::Config;
use crate::state::{AppState, Check, HealthCheck, JobCounts, Shared};
use bin_support::JsonPackageParser;

/// A readiness probe gets this long per dependency.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What [`assemble`] builds the state from.
pub struct Parts {
    pub pool: PgPool,
    pub redis: Client,
    pub redis_prefix: String,
    pub tiers: TierTable,
    pub auth: JwtVerifier,
    pub sandbox: Arc<dyn SandboxRuntime>,
    pub probe: Arc<dyn PreviewProbe>,
    pub request_timeout: Duration,
    pub sse_heartbeat: Duration,
    /// Resume's time budget (its answer bound comes from the configuration).
    pub resume: ResumeConfig,
    /// The preview gateway's settings, when it is on.
    pub gateway: Option<crate::gateway::GatewayConfig>,
}

/// Builds the state over a connected pool and Redis client. Must run inside a tokio runtime (the status
/// cache starts its connection in the background); fails only when the Redis settings cannot make a client.
pub fn assemble(parts: Parts) -> Result<AppState, domain::ports::StoreError> {
    let tiers = Arc::new(parts.tiers);
    let repo: Arc<dyn domain::ports::JobRepository> =
        Arc::new(PgJobRepository::new(parts.pool.clone()));
    let store = RedisLiveStore::new(parts.redis.clone(), parts.redis_prefix.clone());
    let status_reads = CachedLiveStore::new(store.clone(), &parts.redis)?;
    let live: Arc<dyn domain::ports::LiveJobStore> = Arc::new(status_reads.direct_reads());
    let resume = ResumeService::new(
        ResumeDeps {
            repo: repo.clone(),
            live: live.clone(),
            runtime: parts.sandbox.clone(),
            probe: parts.probe.clone(),
            package_json: Arc::new(JsonPackageParser),
        },
        parts.resume,
    );
    let snapshot = SnapshotService::new(
        SnapshotDeps {
            repo: repo.clone(),
            live: live.clone(),
            runtime: parts.sandbox.clone(),
        },
        SnapshotConfig::default(),
    );
    Ok(Arc::new(Shared {
        activity: Activity::new(repo.clone()),
        repo,
        live,
        status_reads,
        queue: Arc::new(RedisQueue::new(
            parts.redis.clone(),
            parts.redis_prefix.clone(),
            (*tiers).clone(),
        )),
        sandbox: parts.sandbox,
        probe: parts.probe,
        logs: Arc::new(infra_redis::RedisLiveLog::new(
            store.clone(),
            infra_redis::LiveLogLimits::default(),
        )),
        log_archive: Arc::new(infra_pg::PgLogArchive::new(parts.pool.clone())),
        health: Arc::new(BackendHealth {
            pool: parts.pool,
            redis: parts.redis,
        }),
        resume,
        snapshot,
        auth: Arc::new(parts.auth),
        tiers,
        metrics: bin_support::metrics::install(),
        shutdown: CancellationToken::new(),
        request_timeout: parts.request_timeout,
        sse_heartbeat: parts.sse_heartbeat,
        gateway: parts.gateway,
    }))
}

/// Connects everything the configuration names. Fails at start, naming what is wrong.
pub async fn build_state(config: &Config) -> anyhow::Result<AppState> {
    let gateway = config
        .gateway()
        .context("the preview gateway's settings (PREVIEW_*)")?;
    let auth = JwtVerifier::new(AuthConfig {
        hs256_secret: config
            .jwt_hs256_secret
            .as_ref()
            .map(|s| s.expose().to_owned()),
        rsa_pem: config.jwt_public_key_pem.clone(),
        jwks_url: config.jwt_jwks_url.clone(),
        issuer: config.jwt_issuer.clone(),
        audience: config.jwt_audience.clone(),
        azp: config.jwt_azp.clone(),
    })?;
    let pool = infra_pg::connect(config.database_url.expose())
        .await
        .context("connecting to postgres (DATABASE_URL)")?;
    let redis = infra_redis::connect(config.redis_url.expose())
        .await
        .context("connecting to redis (REDIS_URL)")?;
    let (sandbox, probe) = config.runtime.build_with_probe()?;
    assemble(Parts {
        pool,
        redis,
        redis_prefix: config.redis_prefix.clone(),
        tiers: config.tiers(),
        auth,
        sandbox,
        probe: Arc::new(probe),
        request_timeout: config.request_timeout(),
        sse_heartbeat: crate::SSE_HEARTBEAT,
        resume: ResumeConfig {
            answer_within: config.resume_answer_within(),
            ..ResumeConfig::default()
        },
        gateway,
    })
    .context("building the status cache's Redis client (REDIS_URL)")
}

/// Pings Postgres and Redis; counts jobs by status.
struct BackendHealth {
    pool: PgPool,
    redis: Client,
}

#[async_trait]
impl HealthCheck for BackendHealth {
    async fn check(&self) -> Vec<Check> {
        let pg = tokio::time::timeout(
            CHECK_TIMEOUT,
            sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&self.pool),
        )
        .await;
        let redis = tokio::time::timeout(CHECK_TIMEOUT, self.redis.ping::<String>(None)).await;
        vec![
            Check {
                name: "postgres",
                result: flatten(pg).map(drop),
            },
            Check {
                name: "redis",
                result: flatten(redis).map(drop),
            },
        ]
    }

    async fn job_counts(&self) -> Option<JobCounts> {
        let counts = tokio::time::timeout(CHECK_TIMEOUT, infra_pg::count_jobs(&self.pool)).await;
        match flatten(counts) {
            Ok(counts) => Some(counts),
            Err(reason) => {
                tracing::warn!(reason = %reason, "jobs by status not counted");
                None
            }
        }
    }
}

fn flatten<T, E: std::fmt::Display>(
    r: Result<Result<T, E>, tokio::time::error::Elapsed>,
) -> Result<T, String> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}
